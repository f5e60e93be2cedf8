-- Client.validate_document. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.validate_document(p_document_id => %(document_id)s,
                                   p_blob_retrievable => %(blob_retrievable)s,
                                   p_mime_type => %(mime_type)s,
                                   p_reason => %(reason)s,
                                   p_blob_size => %(blob_size)s)
