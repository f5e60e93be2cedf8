-- Client.recent_jobs: the latest jobs, optionally of one status and created or ended since a time.
-- Newest first by id (ids grow with creation), so LIMIT reads the primary key backwards.
SELECT j.id AS job_id, j.document_id, d.filename, j.status, j.attempt, j.worker_id,
       j.lease_expires_at, j.released, j.created_at, j.not_before, j.started_at, j.completed_at,
       coalesce(j.completed_at, now()) - j.started_at AS ran_for, j.error_message
  FROM docstatus.extraction_jobs j
  JOIN docstatus.documents d ON d.id = j.document_id
 WHERE (%(status)s::text IS NULL OR j.status = %(status)s::text)
   AND (%(since)s::timestamptz IS NULL
        OR j.created_at >= %(since)s::timestamptz OR j.completed_at >= %(since)s::timestamptz)
 ORDER BY j.id DESC
 LIMIT %(limit)s
