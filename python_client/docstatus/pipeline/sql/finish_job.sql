-- The end of a job in one statement (one transaction, one round trip): record_result, then
-- mark_processing_done. The second takes its document id from the first's row (LATERAL), so
-- it runs after it; either failing (DS004: the lease is gone) undoes both.
SELECT d.id
  FROM docstatus.record_result(p_document_id => %(document_id)s, p_text_blob => %(text_blob)s,
                               p_fields_blob => %(fields_blob)s, p_worker_id => %(worker_id)s) AS r,
       LATERAL docstatus.mark_processing_done(p_document_id => r.document_id, p_worker_id => %(worker_id)s) AS d
