-- Client.documents_awaiting_validation: 'not ready' documents (optionally of one container, last
-- changed before a time), oldest first. Columns in models.Document field order.
SELECT id, blob_container, blob_name, filename, mime_type, size_bytes, text_extraction_status,
       processing_status, status_reason, created_at, updated_at, status_entered_at
  FROM docstatus.documents
 WHERE text_extraction_status = 'not ready'
   AND (%(container)s::text IS NULL OR blob_container = %(container)s::text)
   AND updated_at <= now() - %(older_than)s::interval
 ORDER BY id
 LIMIT %(limit)s
