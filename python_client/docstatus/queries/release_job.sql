-- Client.release_job. Columns in models.ExtractionJob field order.
SELECT id, document_id, status, attempt, idempotency_key, worker_id, lease_expires_at,
       created_at, started_at, completed_at, error_message, not_before, released
  FROM docstatus.release_job(p_job_id => %(job_id)s, p_worker_id => %(worker_id)s, p_reason => %(reason)s)
