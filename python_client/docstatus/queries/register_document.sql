-- Client.register_document. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.register_document(p_blob_container => %(blob_container)s, p_blob_name => %(blob_name)s,
                                   p_filename => %(filename)s, p_mime_type => %(mime_type)s,
                                   p_size_bytes => %(size_bytes)s)
