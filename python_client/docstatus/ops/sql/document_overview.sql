-- docstatus show: one document's row of the overview (state, both statuses, current job, last error).
SELECT document_id, filename, blob_container, blob_name, mime_type, size_bytes, state,
       text_extraction_status, processing_status, status_entered_at, in_status_for, status_reason,
       job_id, job_status, attempt, worker_id, lease_expires_at, last_error, created_at, updated_at
  FROM docstatus.document_overview
 WHERE document_id = %(document_id)s
