-- Client.current_result. Columns in models.DocumentResult field order.
SELECT job_id, document_id, blob_container, text_blob, fields_blob, created_at
  FROM docstatus.current_result(p_document_id => %(document_id)s)
