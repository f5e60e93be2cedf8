-- Client.failure_summary: most failures first. Columns in models.FailurePattern field order.
SELECT error_pattern, failures, documents, first_seen, last_seen, example_error, example_document_ids
  FROM docstatus.failure_summary
 LIMIT %(limit)s
