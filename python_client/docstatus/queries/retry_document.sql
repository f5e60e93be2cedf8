-- Client.retry_document. Columns in models.ExtractionJob field order.
SELECT id, document_id, status, attempt, idempotency_key, worker_id, lease_expires_at,
       created_at, started_at, completed_at, error_message, not_before, released
  FROM docstatus.retry_document(p_document_id => %(document_id)s, p_idempotency_key => %(idempotency_key)s)
