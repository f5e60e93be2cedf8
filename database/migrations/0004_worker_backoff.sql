-- The pipeline worker's side of the database: retries wait with exponential backoff, a worker
-- that shuts down releases its job for an immediate retry, a retryable failure queues the next
-- attempt, and the results of a finished extraction are recorded.
-- depends: 0001_core

------------------------------------------------------------------------------------------------
-- Retry timing, as data beside max_attempts
------------------------------------------------------------------------------------------------

ALTER TABLE docstatus.settings
    ADD COLUMN retry_base_delay interval NOT NULL DEFAULT '10 seconds' CHECK (retry_base_delay >= interval '0'),
    ADD COLUMN retry_max_delay  interval NOT NULL DEFAULT '10 minutes',
    ADD CONSTRAINT settings_retry_delays CHECK (retry_max_delay >= retry_base_delay);
COMMENT ON COLUMN docstatus.settings.retry_base_delay IS
    'How long the second attempt of a document waits after the first one failed (lease expired, or '
    'mark_attempt_failed); every further failure doubles the wait, up to retry_max_delay. 0: retry at once.';
COMMENT ON COLUMN docstatus.settings.retry_max_delay IS 'The longest wait between two attempts.';

-- not_before: when the job may be claimed. Every job gets now() (so the claim order stays
-- "oldest first"); a retry after a failure gets a later time.
ALTER TABLE docstatus.extraction_jobs
    ADD COLUMN not_before timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN released   boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT extraction_jobs_released_failed CHECK (NOT released OR status = 'failed');
COMMENT ON COLUMN docstatus.extraction_jobs.not_before IS
    'claim_extraction_job hands the job out from this time on: its creation for a first attempt, '
    'later for a retry that waits (settings.retry_base_delay).';
COMMENT ON COLUMN docstatus.extraction_jobs.released IS
    'The worker gave this attempt back unfinished (release_job, on shutdown). It failed, but it '
    'does not count against settings.max_attempts.';

-- The claim path: unheld active jobs by the time they may run.
DROP INDEX docstatus.extraction_jobs_claimable;
CREATE INDEX extraction_jobs_claimable ON docstatus.extraction_jobs (not_before, id)
    WHERE status = 'pending extraction' AND worker_id IS NULL;

------------------------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------------------------

-- Queues the next attempt of a document whose active job has just failed; the caller holds the
-- document lock and has just moved the document to failed. With p_backoff (a failure), only
-- while the attempts that count are fewer than settings.max_attempts, and not before
-- retry_base_delay * 2^(failures - 1), capped at retry_max_delay; without it (a release), at
-- once and whatever max_attempts says. Returns the new job's id, NULL when none was queued.
CREATE FUNCTION docstatus._queue_next_attempt(p_document_id bigint, p_backoff boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_settings docstatus.settings;
    v_last_attempt integer;
    v_counted integer;
    v_delay interval := interval '0';
    v_job_id bigint;
BEGIN
    SELECT max(attempt), count(*) FILTER (WHERE NOT released) INTO v_last_attempt, v_counted
      FROM docstatus.extraction_jobs WHERE document_id = p_document_id;
    IF p_backoff THEN
        SELECT * INTO v_settings FROM docstatus.settings;
        IF v_counted >= v_settings.max_attempts THEN
            RETURN NULL;
        END IF;
        -- The exponent stops at 30: any base delay times 2^30 is past any sensible cap already.
        v_delay := least(v_settings.retry_max_delay,
                         v_settings.retry_base_delay * power(2, least(greatest(v_counted - 1, 0), 30)));
    END IF;
    UPDATE docstatus.documents
       SET text_extraction_status = 'ready', processing_status = 'pending extraction', status_reason = NULL
     WHERE id = p_document_id;
    INSERT INTO docstatus.extraction_jobs (document_id, attempt, not_before)
    VALUES (p_document_id, v_last_attempt + 1, now() + v_delay)
    RETURNING id INTO v_job_id;
    RETURN v_job_id;
END;
$$;
COMMENT ON FUNCTION docstatus._queue_next_attempt IS
    'Internal: back to ready with the next attempt after a failure (with backoff, while attempts '
    'remain) or a release (at once).';

CREATE FUNCTION docstatus._raise_lease_not_held(
    p_document_id bigint, p_worker_id text, p_job_id bigint, p_holder text, p_lease_expires_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
              MESSAGE = format('worker %s does not hold a lease on document %s%s',
                  coalesce(p_worker_id, session_user), p_document_id,
                  CASE WHEN p_job_id IS NULL THEN ' (it has no active extraction job)'
                       WHEN p_holder IS NULL THEN format(' (job %s is not held)', p_job_id)
                       ELSE format(' (job %s is held by %s until %s)', p_job_id, p_holder,
                                   p_lease_expires_at) END),
              ERRCODE = 'DS004',
              DETAIL = json_build_object('document_id', p_document_id, 'worker_id', p_worker_id,
                                         'job_id', p_job_id, 'holder', p_holder,
                                         'lease_expires_at', p_lease_expires_at)::text,
              HINT = 'A worker whose lease ran out must drop the job; the reaper ends it.';
END;
$$;
COMMENT ON FUNCTION docstatus._raise_lease_not_held IS 'Internal: raises DS004 as the mark_* functions do.';

------------------------------------------------------------------------------------------------
-- Claim and reaper: retries wait
------------------------------------------------------------------------------------------------

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
             WHERE c.status = 'pending extraction' AND c.worker_id IS NULL AND c.not_before <= now()
               AND d.text_extraction_status = 'ready'
             ORDER BY c.not_before, c.id
             LIMIT 1
               FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.*;
END;
$$;
COMMENT ON FUNCTION docstatus.claim_extraction_job IS
    'Gives the unheld job of a ''ready'' document that has waited longest since its not_before '
    '(a retry waits for its backoff) to p_worker_id with a lease; zero rows when none is free. '
    'Never the same job to two workers (FOR UPDATE SKIP LOCKED).';

CREATE OR REPLACE FUNCTION docstatus.reap_expired_jobs()
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
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
        PERFORM docstatus._queue_next_attempt(v_job.document_id, true);
        RETURN NEXT v_job;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.reap_expired_jobs IS
    'Ends every job whose lease ran out: the job and its document fail with an error naming the '
    'worker; while the attempts that count (all but released ones) are fewer than '
    'settings.max_attempts, the document goes back to ''ready'' with a new attempt that waits '
    'for its backoff (settings.retry_base_delay, doubling). Returns the jobs it ended.';

------------------------------------------------------------------------------------------------
-- Worker functions: release on shutdown, a failure worth retrying
------------------------------------------------------------------------------------------------

-- The graph has no way back from 'in progress' to 'ready', and history is never rewritten, so
-- a release is what the reaper does, at once and for free: this attempt fails (released) and
-- the next one is queued with no wait. A release does not count against max_attempts: a
-- document should not run out of attempts because workers were redeployed while it ran.
CREATE FUNCTION docstatus.release_job(p_job_id bigint, p_worker_id text, p_reason text DEFAULT 'shutting down')
RETURNS docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job docstatus.extraction_jobs;
    v_error text;
BEGIN
    IF p_job_id IS NULL OR coalesce(p_worker_id, '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('job id and worker id are required');
    END IF;
    SELECT * INTO v_job FROM docstatus.extraction_jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        PERFORM docstatus._raise_not_found('job', p_job_id);
    END IF;
    -- Document first, then job: the lock order of the mark_* functions and the reaper.
    PERFORM docstatus._lock_document(v_job.document_id);
    SELECT * INTO v_job FROM docstatus.extraction_jobs WHERE id = p_job_id FOR UPDATE;
    IF v_job.status <> 'pending extraction' OR v_job.worker_id IS DISTINCT FROM p_worker_id
       OR v_job.lease_expires_at <= now() THEN
        PERFORM docstatus._raise_lease_not_held(
            v_job.document_id, p_worker_id, CASE WHEN v_job.status = 'pending extraction' THEN v_job.id END,
            v_job.worker_id, v_job.lease_expires_at);
    END IF;

    v_error := format('released by worker %s: %s', p_worker_id, coalesce(nullif(btrim(p_reason), ''), 'no reason given'));
    UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = v_error, released = true
     WHERE id = p_job_id RETURNING * INTO v_job;
    UPDATE docstatus.documents
       SET text_extraction_status = 'failed', processing_status = 'failed', status_reason = v_error
     WHERE id = v_job.document_id;
    PERFORM docstatus._queue_next_attempt(v_job.document_id, false);
    RETURN v_job;
END;
$$;
COMMENT ON FUNCTION docstatus.release_job IS
    'A worker gives back a job it holds, unfinished (on shutdown): the attempt fails with '
    '''released by worker <id>: <reason>'' and released = true, and the document is queued again '
    'at once with the next attempt; a release does not count against settings.max_attempts. DS004 '
    'unless p_worker_id holds the job with an unexpired lease; DS002 for an unknown job.';

CREATE FUNCTION docstatus.mark_attempt_failed(
    p_document_id bigint, p_error_message text, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
BEGIN
    IF coalesce(btrim(p_error_message), '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('a failure needs an error message');
    END IF;
    v_document := docstatus._advance_document(p_document_id, p_worker_id, 'failed', 'failed',
                                              p_error_message, 'failed', p_error_message);
    IF docstatus._queue_next_attempt(p_document_id, true) IS NOT NULL THEN
        SELECT * INTO v_document FROM docstatus.documents WHERE id = p_document_id;
    END IF;
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus.mark_attempt_failed IS
    'A failure worth retrying (a timeout, a service down): as mark_processing_failed, then, while '
    'the attempts that count are fewer than settings.max_attempts, back to ''ready'' with the next '
    'attempt after its backoff, as the reaper does. Returns the document: ''ready'' when retried, '
    '''failed'' when the attempts are used up. Lease rules as mark_ocr_running (DS004).';

------------------------------------------------------------------------------------------------
-- Results: the extracted text and fields, as blobs beside the document
------------------------------------------------------------------------------------------------

CREATE TABLE docstatus.document_results (
    -- No foreign keys, as in status_events: documents and jobs are never deleted (_refuse_delete),
    -- and a key here would make TRUNCATE of the jobs fail before that trigger could say why.
    job_id         bigint PRIMARY KEY,
    document_id    bigint NOT NULL,
    blob_container text NOT NULL CHECK (blob_container <> ''),
    text_blob      text NOT NULL CHECK (text_blob <> ''),
    fields_blob    text NOT NULL CHECK (fields_blob <> ''),
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE docstatus.document_results IS
    'Where the result of an extraction run is stored: the extracted text and the fields (JSON) as '
    'two blobs in the document''s container, one row per job. A document''s result is that of its '
    'latest done job; a row of a job that did not end done is a leftover of an interrupted run.';

CREATE INDEX document_results_by_document ON docstatus.document_results (document_id, job_id DESC);

CREATE FUNCTION docstatus.record_result(
    p_document_id bigint, p_text_blob text, p_fields_blob text, p_worker_id text DEFAULT NULL)
RETURNS docstatus.document_results
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_job docstatus.extraction_jobs;
    v_result docstatus.document_results;
BEGIN
    IF coalesce(p_text_blob, '') = '' OR coalesce(p_fields_blob, '') = '' OR p_worker_id = '' THEN
        PERFORM docstatus._raise_invalid_argument(
            'text and fields blob names must be non-empty, and the worker id non-empty or null');
    END IF;
    v_document := docstatus._lock_document(p_document_id);
    SELECT * INTO v_job FROM docstatus.extraction_jobs
     WHERE document_id = p_document_id AND status = 'pending extraction';
    IF v_job.worker_id IS NULL OR v_job.worker_id IS DISTINCT FROM coalesce(p_worker_id, v_job.worker_id)
       OR v_job.lease_expires_at <= now() THEN
        PERFORM docstatus._raise_lease_not_held(p_document_id, p_worker_id, v_job.id, v_job.worker_id,
                                                v_job.lease_expires_at);
    END IF;
    INSERT INTO docstatus.document_results AS r (job_id, document_id, blob_container, text_blob, fields_blob)
    VALUES (v_job.id, p_document_id, v_document.blob_container, p_text_blob, p_fields_blob)
    ON CONFLICT (job_id) DO UPDATE
       SET text_blob = excluded.text_blob, fields_blob = excluded.fields_blob, created_at = now()
    RETURNING * INTO v_result;
    RETURN v_result;
END;
$$;
COMMENT ON FUNCTION docstatus.record_result IS
    'Records the blobs (in the document''s container) holding the extracted text and the fields '
    'of the document''s active job; again for the same job replaces them. Call it before '
    'mark_processing_done. Lease rules as mark_ocr_running (DS004).';

------------------------------------------------------------------------------------------------
-- Roles
------------------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION docstatus._queue_next_attempt(bigint, boolean),
                       docstatus._raise_lease_not_held(bigint, text, bigint, text, timestamptz),
                       docstatus.release_job(bigint, text, text),
                       docstatus.mark_attempt_failed(bigint, text, text),
                       docstatus.record_result(bigint, text, text, text) FROM PUBLIC;
GRANT SELECT ON docstatus.document_results TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.release_job(bigint, text, text),
                          docstatus.mark_attempt_failed(bigint, text, text),
                          docstatus.record_result(bigint, text, text, text) TO docstatus_worker;
