-- Client.list_documents: newest first, keyset-paginated. Columns in models.DocumentListEntry field order.
SELECT document_id, filename, mime_type, size_bytes, state, text_extraction_status, processing_status,
       status_reason, status_entered_at, created_at, updated_at
  FROM docstatus.list_documents(
        p_state => %(state)s, p_processing_status => %(processing_status)s, p_mime_type => %(mime_type)s,
        p_filename_contains => %(filename_contains)s,
        p_created_from => %(created_from)s, p_created_to => %(created_to)s,
        p_updated_from => %(updated_from)s, p_updated_to => %(updated_to)s,
        p_after_id => %(after_id)s, p_limit => %(limit)s)
