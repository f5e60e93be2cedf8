-- Documents of one container still waiting for a successful validation, oldest first.
SELECT id
  FROM docstatus.documents
 WHERE text_extraction_status = 'not ready'
   AND blob_container = %(container)s
   AND updated_at <= now() - %(older_than)s::interval
 ORDER BY id
 LIMIT %(limit)s
