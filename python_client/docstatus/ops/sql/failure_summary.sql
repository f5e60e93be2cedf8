-- docstatus failures and the metrics: failed jobs grouped by normalised error, most failures first.
SELECT error_pattern, failures, documents, first_seen, last_seen, example_error, example_document_ids
  FROM docstatus.failure_summary
