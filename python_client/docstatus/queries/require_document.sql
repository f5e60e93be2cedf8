-- Client.require_document. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.require_document(p_document_id => %(document_id)s)
