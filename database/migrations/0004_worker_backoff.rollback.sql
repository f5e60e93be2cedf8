-- Back to 0001_core's claim and reaper: no backoff, no release, no recorded results.
-- Jobs waiting for their backoff become claimable at once; released attempts count again.

DROP FUNCTION docstatus.record_result(bigint, text, text, text);
DROP TABLE docstatus.document_results;
DROP FUNCTION docstatus.mark_attempt_failed(bigint, text, text);
DROP FUNCTION docstatus.release_job(bigint, text, text);

CREATE OR REPLACE FUNCTION docstatus.claim_extraction_job(p_worker_id text, p_lease interval DEFAULT '5 minutes')
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(p_worker_id, '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('worker id must be non-empty');
    END IF;
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        PERFORM docstatus._raise_invalid_argument(format('lease must be positive, got %s', p_lease));
    END IF;
    -- An expired lease keeps its holder: only the reaper ends that job, so every attempt counts.
    RETURN QUERY
    UPDATE docstatus.extraction_jobs j
       SET worker_id = p_worker_id, lease_expires_at = now() + p_lease, started_at = now()
     WHERE j.id = (
            SELECT c.id FROM docstatus.extraction_jobs c
              JOIN docstatus.documents d ON d.id = c.document_id
             WHERE c.status = 'pending extraction' AND c.worker_id IS NULL
               AND d.text_extraction_status = 'ready'
             ORDER BY c.created_at, c.id
             LIMIT 1
               FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.*;
END;
$$;
COMMENT ON FUNCTION docstatus.claim_extraction_job IS
    'Gives the oldest unheld job of a ''ready'' document to p_worker_id with a lease; zero rows '
    'when none is free. Never the same job to two workers (FOR UPDATE SKIP LOCKED).';


CREATE OR REPLACE FUNCTION docstatus.reap_expired_jobs()
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_max_attempts integer := (SELECT max_attempts FROM docstatus.settings);
    v_expired record;
    v_job docstatus.extraction_jobs;
    v_error text;
BEGIN
    -- Documents are locked before jobs, in the same order as the mark_* functions, so the
    -- reaper and a worker never deadlock; a document somebody else holds is left for next time.
    FOR v_expired IN
        SELECT j.id AS job_id, j.document_id
          FROM docstatus.extraction_jobs j
          JOIN docstatus.documents d ON d.id = j.document_id
         WHERE j.status = 'pending extraction' AND j.worker_id IS NOT NULL AND j.lease_expires_at <= now()
         ORDER BY j.lease_expires_at
           FOR UPDATE OF d SKIP LOCKED
    LOOP
        SELECT * INTO v_job FROM docstatus.extraction_jobs WHERE id = v_expired.job_id FOR UPDATE;
        CONTINUE WHEN v_job.status <> 'pending extraction' OR v_job.lease_expires_at > now();

        v_error := format('lease expired: worker %s held the job until %s', v_job.worker_id, v_job.lease_expires_at);
        UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = v_error
         WHERE id = v_job.id RETURNING * INTO v_job;
        UPDATE docstatus.documents
           SET text_extraction_status = 'failed', processing_status = 'failed', status_reason = v_error
         WHERE id = v_job.document_id;
        IF v_job.attempt < v_max_attempts THEN
            UPDATE docstatus.documents
               SET text_extraction_status = 'ready', processing_status = 'pending extraction', status_reason = NULL
             WHERE id = v_job.document_id;
            PERFORM docstatus._insert_job(v_job.document_id, NULL);
        END IF;
        RETURN NEXT v_job;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.reap_expired_jobs IS
    'Ends every job whose lease ran out: the job and its document fail with an error naming the '
    'worker; while attempt < settings.max_attempts the document goes back to ''ready'' with a new '
    'attempt. Returns the jobs it ended.';

DROP FUNCTION docstatus._raise_lease_not_held(bigint, text, bigint, text, timestamptz);
DROP FUNCTION docstatus._queue_next_attempt(bigint, boolean);

DROP INDEX docstatus.extraction_jobs_claimable;
ALTER TABLE docstatus.extraction_jobs
    DROP CONSTRAINT extraction_jobs_released_failed,
    DROP COLUMN released,
    DROP COLUMN not_before;
-- The claim path: unheld active jobs, oldest first.
CREATE INDEX extraction_jobs_claimable ON docstatus.extraction_jobs (created_at, id)
    WHERE status = 'pending extraction' AND worker_id IS NULL;

ALTER TABLE docstatus.settings
    DROP CONSTRAINT settings_retry_delays,
    DROP COLUMN retry_max_delay,
    DROP COLUMN retry_base_delay;
