-- Client.retry_failed_documents. Columns in models.ExtractionJob field order.
SELECT id, document_id, status, attempt, idempotency_key, worker_id, lease_expires_at,
       created_at, started_at, completed_at, error_message, not_before, released
  FROM docstatus.retry_failed_documents(p_error_pattern => %(error_pattern)s)
