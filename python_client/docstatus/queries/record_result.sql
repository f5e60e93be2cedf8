-- Client.record_result. Columns in models.DocumentResult field order.
SELECT job_id, document_id, blob_container, text_blob, fields_blob, created_at
  FROM docstatus.record_result(p_document_id => %(document_id)s, p_text_blob => %(text_blob)s,
                               p_fields_blob => %(fields_blob)s, p_worker_id => %(worker_id)s)
