-- Client.document_overview. Columns in models.DocumentOverview field order.
SELECT document_id, blob_container, blob_name, filename, mime_type, size_bytes, state,
       text_extraction_status, processing_status, status_entered_at, in_status_for, status_reason,
       job_id, job_status, attempt, worker_id, lease_expires_at, last_error, created_at, updated_at
  FROM docstatus.document_overview
 WHERE document_id = %(document_id)s
