-- Client.register_documents. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.register_documents(p_blob_containers => %(blob_containers)s, p_blob_names => %(blob_names)s,
                                    p_filenames => %(filenames)s, p_mime_types => %(mime_types)s,
                                    p_size_bytes => %(size_bytes)s)
