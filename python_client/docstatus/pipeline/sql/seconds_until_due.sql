-- How long until the next unheld job may be claimed (a retry waiting for its backoff); NULL when
-- none waits. Reads the first entry of the extraction_jobs_claimable index.
SELECT extract(epoch FROM min(not_before) - now())::float8
  FROM docstatus.extraction_jobs
 WHERE status = 'pending extraction' AND worker_id IS NULL
