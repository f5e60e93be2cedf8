-- Client.claim_extraction_job: zero or one row. Columns in models.ExtractionJob field order.
SELECT id, document_id, status, attempt, idempotency_key, worker_id, lease_expires_at,
       created_at, started_at, completed_at, error_message, not_before, released
  FROM docstatus.claim_extraction_job(p_worker_id => %(worker_id)s, p_lease => %(lease)s)
