-- Back to 0004_worker_backoff: the Python side asks its own SQL again.

DROP FUNCTION docstatus.run_maintenance(boolean);
DROP TYPE docstatus.maintenance_action;
DROP FUNCTION docstatus.require_document(bigint);
DROP FUNCTION docstatus.current_result(bigint);
DROP FUNCTION docstatus.finish_job(bigint, text, text, text);
DROP FUNCTION docstatus.next_job_due();
DROP FUNCTION docstatus.claim_jobs(text, interval, integer, boolean);
DROP TYPE docstatus.claimed_job;

CREATE OR REPLACE VIEW docstatus.document_overview AS
SELECT d.id AS document_id, d.blob_container, d.blob_name, d.filename, d.mime_type, d.size_bytes,
       -- The names of stage_slas.state, plus completed and failed.
       CASE d.text_extraction_status WHEN 'not ready' THEN 'uploaded' WHEN 'ready' THEN 'queued'
            WHEN 'in progress' THEN d.processing_status ELSE d.text_extraction_status END AS state,
       d.text_extraction_status, d.processing_status, d.status_entered_at,
       now() - d.status_entered_at AS in_status_for, d.status_reason,
       j.id AS job_id, j.status AS job_status, j.attempt, j.worker_id, j.lease_expires_at,
       coalesce(f.error_message, CASE WHEN d.text_extraction_status = 'failed' THEN d.status_reason END)
           AS last_error,
       d.created_at, d.updated_at
  FROM docstatus.documents d
  -- The current job is the latest attempt, whatever its status.
  LEFT JOIN LATERAL (
        SELECT id, status, attempt, worker_id, lease_expires_at FROM docstatus.extraction_jobs
         WHERE document_id = d.id ORDER BY attempt DESC LIMIT 1) j ON true
  LEFT JOIN LATERAL (
        SELECT error_message FROM docstatus.extraction_jobs
         WHERE document_id = d.id AND status = 'failed' ORDER BY attempt DESC LIMIT 1) f ON true;

CREATE OR REPLACE VIEW docstatus.stuck_documents AS
SELECT d.id AS document_id, s.state, d.text_extraction_status, d.processing_status,
       d.status_entered_at, s.max_duration AS sla, now() - d.status_entered_at AS in_state_for,
       j.id AS job_id, j.attempt, j.worker_id, j.lease_expires_at, d.status_reason
  FROM docstatus.stage_slas s
  JOIN docstatus.documents d
    ON d.processing_status = s.processing_status
   AND d.text_extraction_status = s.text_extraction_status
   AND d.status_entered_at < now() - s.max_duration
  -- The active job, looked up per stuck document (LIMIT 1 keeps it a lookup, not a join that
  -- reads every active job).
  LEFT JOIN LATERAL (
        SELECT id, attempt, worker_id, lease_expires_at FROM docstatus.extraction_jobs
         WHERE document_id = d.id AND status = 'pending extraction' LIMIT 1) j ON true
 -- The predicate of documents_active_by_status, spelled out so the planner may use that index:
 -- only the 1% of documents still moving are read, never the finished ones.
 WHERE d.text_extraction_status NOT IN ('completed', 'failed');

DROP VIEW docstatus.active_documents;

DROP FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint);
CREATE FUNCTION docstatus.validate_document(
    p_document_id bigint, p_blob_retrievable boolean, p_mime_type text, p_reason text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_mime text := lower(nullif(btrim(p_mime_type), ''));
    v_had_job boolean;
    v_reason text;
    v_max_bytes bigint;
BEGIN
    IF p_blob_retrievable IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('p_blob_retrievable must not be null');
    END IF;
    IF p_blob_retrievable AND v_mime IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('a retrievable blob needs its detected MIME type');
    END IF;
    v_document := docstatus._lock_document(p_document_id);

    -- Only an uploaded document, or one that failed validation (it never had a job), is judged.
    IF v_document.text_extraction_status = 'failed' THEN
        v_had_job := EXISTS (SELECT FROM docstatus.extraction_jobs WHERE document_id = p_document_id);
        IF v_had_job THEN
            RETURN v_document;
        END IF;
    ELSIF v_document.text_extraction_status <> 'not ready' THEN
        RETURN v_document;
    END IF;

    IF NOT p_blob_retrievable THEN
        v_reason := 'blob not retrievable' || coalesce(': ' || left(nullif(btrim(p_reason), ''), 1000), '');
    ELSE
        -- Size before type: an empty file has no type worth naming. A size nobody registered
        -- (NULL) cannot be judged and passes these two rules.
        IF v_document.size_bytes = 0 THEN
            v_reason := 'document is empty (0 bytes)';
        ELSIF v_document.size_bytes IS NOT NULL THEN
            SELECT max_document_bytes INTO v_max_bytes FROM docstatus.settings;
            IF v_document.size_bytes > v_max_bytes THEN
                v_reason := format('document is %s bytes, more than the limit of %s bytes '
                                   '(settings.max_document_bytes)', v_document.size_bytes, v_max_bytes);
            END IF;
        END IF;
        IF v_reason IS NULL AND NOT EXISTS (SELECT FROM docstatus.allowed_mime_types WHERE mime_type = v_mime) THEN
            v_reason := format('MIME type %s is not allowed', v_mime);
        END IF;
        IF v_reason IS NOT NULL THEN
            IF v_document.text_extraction_status = 'failed' THEN
                -- Rejected again: no round trip through 'not ready'.
                UPDATE docstatus.documents SET status_reason = v_reason, mime_type = v_mime
                 WHERE id = p_document_id RETURNING * INTO v_document;
                RETURN v_document;
            END IF;
            UPDATE docstatus.documents
               SET text_extraction_status = 'failed', processing_status = 'failed',
                   status_reason = v_reason, mime_type = v_mime
             WHERE id = p_document_id RETURNING * INTO v_document;
            RETURN v_document;
        END IF;
    END IF;

    -- Retrievable and accepted, or not retrievable: either way the document is (back) in 'not ready'.
    IF v_document.text_extraction_status = 'failed' OR v_reason IS NOT NULL THEN
        UPDATE docstatus.documents
           SET text_extraction_status = 'not ready', processing_status = 'pending extraction',
               status_reason = v_reason
         WHERE id = p_document_id RETURNING * INTO v_document;
    END IF;
    IF v_reason IS NOT NULL THEN
        RETURN v_document;
    END IF;

    UPDATE docstatus.documents
       SET text_extraction_status = 'ready', status_reason = NULL, mime_type = v_mime
     WHERE id = p_document_id RETURNING * INTO v_document;
    PERFORM docstatus._insert_job(p_document_id, NULL);
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus.validate_document IS
    'Promotes an uploaded document: retrievable and accepted -> ''ready'' with one pending job; '
    'not retrievable -> stays ''not ready'' with status_reason (validate again later); rejected '
    '-> ''failed'' with the reason: an empty document, one larger than settings.max_document_bytes '
    '(both judged on the registered size_bytes), or a MIME type not in allowed_mime_types. Accepts '
    'a document that failed validation again. Any other document is returned unchanged. '
    'p_reason: why the blob is not retrievable, appended to status_reason.';

REVOKE ALL ON FUNCTION docstatus.validate_document(bigint, boolean, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text, text) TO docstatus_dms;

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
DROP FUNCTION docstatus._is_claimable(text, text, text);
DROP FUNCTION docstatus._check_claim_arguments(text, interval);

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
REVOKE ALL ON FUNCTION docstatus._raise_lease_not_held(bigint, text, bigint, text, timestamptz) FROM PUBLIC;
CREATE OR REPLACE FUNCTION docstatus._advance_document(
    p_document_id bigint, p_worker_id text, p_text_status text, p_processing_status text,
    p_reason text, p_end_job text, p_error_message text)
RETURNS docstatus.documents
LANGUAGE plpgsql AS $$
DECLARE
    v_document docstatus.documents;
    v_job_id bigint;
    v_holder text;
    v_lease_expires_at timestamptz;
BEGIN
    IF p_document_id IS NULL OR p_worker_id = '' THEN
        PERFORM docstatus._raise_invalid_argument('document id is required and worker id must be non-empty');
    END IF;
    -- One statement: lock, check (the trigger), move. Already in the target state finds no row.
    UPDATE docstatus.documents
       SET text_extraction_status = p_text_status, processing_status = p_processing_status,
           status_reason = p_reason
     WHERE id = p_document_id AND processing_status <> p_processing_status
    RETURNING * INTO v_document;
    IF NOT FOUND THEN
        SELECT * INTO v_document FROM docstatus.documents WHERE id = p_document_id;
        IF NOT FOUND THEN
            PERFORM docstatus._raise_not_found('document', p_document_id);
        END IF;
        PERFORM docstatus._raise_invalid_transition(
            p_document_id, 'processing', v_document.processing_status, p_processing_status);
    END IF;

    -- The document lock above keeps the reaper and other callers away from its job, so the
    -- job needs no lock of its own to be checked; ending it is the same statement.
    IF p_end_job IS NULL THEN
        SELECT id, worker_id, lease_expires_at INTO v_job_id, v_holder, v_lease_expires_at
          FROM docstatus.extraction_jobs
         WHERE document_id = p_document_id AND status = 'pending extraction';
    ELSE
        UPDATE docstatus.extraction_jobs SET status = p_end_job, error_message = p_error_message
         WHERE document_id = p_document_id AND status = 'pending extraction'
        RETURNING id, worker_id, lease_expires_at INTO v_job_id, v_holder, v_lease_expires_at;
    END IF;
    IF (p_worker_id IS NOT NULL AND v_holder IS DISTINCT FROM p_worker_id)
       OR (v_holder IS NOT NULL AND v_lease_expires_at <= now()) THEN
        RAISE EXCEPTION USING
                  MESSAGE = format('worker %s does not hold a lease on document %s%s',
                      coalesce(p_worker_id, session_user), p_document_id,
                      CASE WHEN v_job_id IS NULL THEN ' (it has no active extraction job)'
                           WHEN v_holder IS NULL THEN format(' (job %s is not held)', v_job_id)
                           ELSE format(' (job %s is held by %s until %s)', v_job_id, v_holder,
                                       v_lease_expires_at) END),
                  ERRCODE = 'DS004',
                  DETAIL = json_build_object('document_id', p_document_id, 'worker_id', p_worker_id,
                                             'job_id', v_job_id, 'holder', v_holder,
                                             'lease_expires_at', v_lease_expires_at)::text,
                  HINT = 'A worker whose lease ran out must drop the job; the reaper ends it.';
    END IF;
    RETURN v_document;
END;
$$;

CREATE OR REPLACE FUNCTION docstatus.release_job(p_job_id bigint, p_worker_id text, p_reason text DEFAULT 'shutting down')
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

CREATE OR REPLACE FUNCTION docstatus.record_result(
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
DROP FUNCTION docstatus._require_lease(bigint, text, bigint, text, timestamptz, boolean);

DROP TABLE docstatus.document_states;
