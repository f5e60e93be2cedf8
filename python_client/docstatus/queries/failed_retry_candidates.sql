-- Client.failed_retry_candidates: failed documents, optionally only those whose error matches.
-- A pattern matches the error itself (ILIKE) or, exactly, its normalised form as
-- `docstatus failures` prints it. had_job false: the document failed validation.
SELECT d.id AS document_id, d.text_extraction_status,
       EXISTS (SELECT FROM docstatus.extraction_jobs j WHERE j.document_id = d.id) AS had_job,
       d.status_reason, d.blob_container
  FROM docstatus.documents d
 WHERE d.text_extraction_status = 'failed'
   AND (%(error_like)s::text IS NULL
        OR d.status_reason ILIKE %(error_like)s::text
        OR docstatus.normalise_error(d.status_reason) = %(error_like)s::text)
 ORDER BY d.id
