-- Client.list_jobs: every attempt of a document, first first. Columns in models.ExtractionJob field order.
SELECT id, document_id, status, attempt, idempotency_key, worker_id, lease_expires_at,
       created_at, started_at, completed_at, error_message, not_before, released
  FROM docstatus.extraction_jobs
 WHERE document_id = %(document_id)s
 ORDER BY attempt
