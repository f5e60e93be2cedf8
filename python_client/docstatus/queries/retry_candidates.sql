-- Client.retry_candidates: the named documents, their status and whether they ever had a job.
SELECT d.id AS document_id, d.text_extraction_status,
       EXISTS (SELECT FROM docstatus.extraction_jobs j WHERE j.document_id = d.id) AS had_job,
       d.status_reason, d.blob_container
  FROM docstatus.documents d
 WHERE d.id = ANY (%(document_ids)s::bigint[])
 ORDER BY d.id
