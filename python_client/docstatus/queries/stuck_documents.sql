-- Client.stuck_documents: longest stuck first. Columns in models.StuckDocument field order.
SELECT document_id, state, text_extraction_status, processing_status, status_entered_at, sla,
       in_state_for, job_id, attempt, worker_id, lease_expires_at, status_reason
  FROM docstatus.stuck_documents
 ORDER BY status_entered_at, document_id
