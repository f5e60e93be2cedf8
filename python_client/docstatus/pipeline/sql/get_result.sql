-- A document's result: that of its latest job that ended done.
SELECT r.document_id, r.job_id, j.attempt, r.blob_container, r.text_blob, r.fields_blob, r.created_at
  FROM docstatus.document_results r
  JOIN docstatus.extraction_jobs j ON j.id = r.job_id
 WHERE r.document_id = %(document_id)s AND j.status = 'done'
 ORDER BY j.attempt DESC
 LIMIT 1
