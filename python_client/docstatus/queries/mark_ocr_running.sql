-- Client.mark_ocr_running. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.mark_ocr_running(p_document_id => %(document_id)s, p_worker_id => %(worker_id)s)
