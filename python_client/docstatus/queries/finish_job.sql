-- Client.finish_job. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.finish_job(p_document_id => %(document_id)s, p_text_blob => %(text_blob)s,
                            p_fields_blob => %(fields_blob)s, p_worker_id => %(worker_id)s)
