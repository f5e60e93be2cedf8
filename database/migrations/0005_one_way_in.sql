-- One way into the database: rules that lived in Python-side SQL move into the SQL API. The six
-- document states become data (document_states), the worker gets a claim that returns the job
-- with its document (claim_jobs, optionally starting OCR in the same transaction), finish_job,
-- current_result, next_job_due (the claims' own readiness rule) and run_maintenance;
-- validate_document judges the observed blob size; one lease check raises DS004.
-- depends: 0004_worker_backoff

------------------------------------------------------------------------------------------------
-- The six document states as data
------------------------------------------------------------------------------------------------

-- The names of the six (text_extraction_status, processing_status) pairs a document can be in.
-- The documents pair CHECK, stage_slas, document_overview and every client's ordering read it,
-- so a state is spelled once. Reference data: no role may write it.
CREATE TABLE docstatus.document_states (
    state                  text PRIMARY KEY,
    text_extraction_status text NOT NULL,
    processing_status      text NOT NULL,
    final                  boolean NOT NULL,
    display_order          integer NOT NULL UNIQUE,
    UNIQUE (text_extraction_status, processing_status)
);
COMMENT ON TABLE docstatus.document_states IS
    'The six states of a document: its name, the pair of status columns that spells it, whether '
    'it is final, and the order to show states in. document_overview names states with it; the '
    'CHECKs documents_status_pair and stage_slas_state spell the same pairs (a test keeps them equal).';
INSERT INTO docstatus.document_states VALUES
    ('uploaded',    'not ready',   'pending extraction', false, 1),
    ('queued',      'ready',       'pending extraction', false, 2),
    ('ocr running', 'in progress', 'ocr running',        false, 3),
    ('llm running', 'in progress', 'llm running',        false, 4),
    ('completed',   'completed',   'done',               true,  5),
    ('failed',      'failed',      'failed',             true,  6);

-- documents_status_pair and stage_slas_state keep their literal lists: a CHECK must be immutable,
-- and one that read this table would let a pg_dump restore check rows before the table is filled.
-- A test proves the lists and this table name the same pairs.

------------------------------------------------------------------------------------------------
-- One lease check (DS004) for every function that writes on a worker's behalf
------------------------------------------------------------------------------------------------

-- Raises DS004 unless the caller may act on the document's active job: with p_worker_id, that
-- worker must hold it; whoever holds it, the lease must not have run out; with p_must_be_held,
-- somebody must hold it even when no worker id is given.
CREATE FUNCTION docstatus._require_lease(
    p_document_id bigint, p_worker_id text, p_job_id bigint, p_holder text, p_lease_expires_at timestamptz,
    p_must_be_held boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (p_worker_id IS NOT NULL AND p_holder IS DISTINCT FROM p_worker_id)
       OR (p_holder IS NOT NULL AND p_lease_expires_at <= now())
       OR (p_must_be_held AND p_holder IS NULL) THEN
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
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._require_lease IS
    'Internal: the one lease check (DS004) of the mark_* functions, release_job and record_result.';

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
    PERFORM docstatus._require_lease(p_document_id, p_worker_id, v_job_id, v_holder, v_lease_expires_at);
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
    IF v_job.status <> 'pending extraction' THEN
        v_job.id := NULL;  -- an ended job: nobody holds it
        v_job.worker_id := NULL;
    END IF;
    PERFORM docstatus._require_lease(v_job.document_id, p_worker_id, v_job.id, v_job.worker_id,
                                     v_job.lease_expires_at);

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
    PERFORM docstatus._require_lease(p_document_id, p_worker_id, v_job.id, v_job.worker_id,
                                     v_job.lease_expires_at, p_must_be_held => true);
    INSERT INTO docstatus.document_results AS r (job_id, document_id, blob_container, text_blob, fields_blob)
    VALUES (v_job.id, p_document_id, v_document.blob_container, p_text_blob, p_fields_blob)
    ON CONFLICT (job_id) DO UPDATE
       SET text_blob = excluded.text_blob, fields_blob = excluded.fields_blob, created_at = now()
    RETURNING * INTO v_result;
    RETURN v_result;
END;
$$;

DROP FUNCTION docstatus._raise_lease_not_held(bigint, text, bigint, text, timestamptz);

------------------------------------------------------------------------------------------------
-- The worker's side: one readiness rule for the claims and for "when is the next job due"
------------------------------------------------------------------------------------------------

-- The arguments every claim checks (DS003).
CREATE FUNCTION docstatus._check_claim_arguments(p_worker_id text, p_lease interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(p_worker_id, '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('worker id must be non-empty');
    END IF;
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        PERFORM docstatus._raise_invalid_argument(format('lease must be positive, got %s', p_lease));
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._check_claim_arguments IS 'Internal: DS003 unless the worker id is non-empty and the lease positive.';

-- A job a worker may take once its not_before has come: unheld, of a queued document. A plain
-- SQL expression, so the planner inlines it and the claims still read extraction_jobs_claimable.
CREATE FUNCTION docstatus._is_claimable(p_job_status text, p_worker_id text, p_text_extraction_status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_job_status = 'pending extraction' AND p_worker_id IS NULL AND p_text_extraction_status = 'ready'
$$;
COMMENT ON FUNCTION docstatus._is_claimable IS
    'Internal: the readiness rule shared by claim_extraction_job, claim_jobs and next_job_due '
    '(a due job also has not_before <= now()).';

CREATE OR REPLACE FUNCTION docstatus.claim_extraction_job(p_worker_id text, p_lease interval DEFAULT '5 minutes')
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM docstatus._check_claim_arguments(p_worker_id, p_lease);
    -- An expired lease keeps its holder: only the reaper ends that job, so every attempt counts.
    RETURN QUERY
    UPDATE docstatus.extraction_jobs j
       SET worker_id = p_worker_id, lease_expires_at = now() + p_lease, started_at = now()
     WHERE j.id = (
            SELECT c.id FROM docstatus.extraction_jobs c
              JOIN docstatus.documents d ON d.id = c.document_id
             WHERE docstatus._is_claimable(c.status, c.worker_id, d.text_extraction_status)
               AND c.not_before <= now()
             ORDER BY c.not_before, c.id
             LIMIT 1
               FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.*;
END;
$$;

-- What claim_jobs returns: the job and its document, one flat row, so a caller in any language
-- reads columns by name.
CREATE TYPE docstatus.claimed_job AS (
    job_id                 bigint,
    document_id            bigint,
    job_status             text,
    attempt                integer,
    idempotency_key        text,
    worker_id              text,
    lease_expires_at       timestamptz,
    job_created_at         timestamptz,
    started_at             timestamptz,
    completed_at           timestamptz,
    error_message          text,
    not_before             timestamptz,
    released               boolean,
    blob_container         text,
    blob_name              text,
    filename               text,
    mime_type              text,
    size_bytes             bigint,
    text_extraction_status text,
    processing_status      text,
    status_reason          text,
    document_created_at    timestamptz,
    document_updated_at    timestamptz,
    status_entered_at      timestamptz
);
COMMENT ON TYPE docstatus.claimed_job IS
    'A claimed job (job_* and the columns of extraction_jobs) with its document (the columns of '
    'documents, document_* where the names clash), as claim_jobs returns it.';

CREATE FUNCTION docstatus.claim_jobs(
    p_worker_id text, p_lease interval DEFAULT '5 minutes', p_limit integer DEFAULT 1,
    p_start_ocr boolean DEFAULT false)
RETURNS SETOF docstatus.claimed_job
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job_ids bigint[];
    v_document_ids bigint[];
BEGIN
    PERFORM docstatus._check_claim_arguments(p_worker_id, p_lease);
    IF p_limit IS NULL OR p_limit < 1 THEN
        PERFORM docstatus._raise_invalid_argument(format('limit must be positive, got %s', p_limit));
    END IF;
    -- The document is locked with its job (SKIP LOCKED both): the mark_* functions lock the
    -- document before the job, so waiting here for a document could deadlock with them. The ids
    -- go through arrays, so each later statement is a primary-key lookup whatever p_limit is.
    SELECT array_agg(picked.id), array_agg(picked.document_id) INTO v_job_ids, v_document_ids
      FROM (SELECT c.id, c.document_id FROM docstatus.extraction_jobs c
              JOIN docstatus.documents d ON d.id = c.document_id
             WHERE docstatus._is_claimable(c.status, c.worker_id, d.text_extraction_status)
               AND c.not_before <= now()
             ORDER BY c.not_before, c.id
             LIMIT p_limit
               FOR UPDATE OF c, d SKIP LOCKED) AS picked;
    IF v_job_ids IS NULL THEN
        RETURN;
    END IF;
    IF p_start_ocr THEN
        -- As mark_ocr_running would, in the claim's transaction: one round trip fewer per job.
        UPDATE docstatus.documents
           SET text_extraction_status = 'in progress', processing_status = 'ocr running', status_reason = NULL
         WHERE id = ANY (v_document_ids);
    END IF;
    RETURN QUERY
    UPDATE docstatus.extraction_jobs j
       SET worker_id = p_worker_id, lease_expires_at = now() + p_lease, started_at = now()
      FROM docstatus.documents d
     WHERE j.id = ANY (v_job_ids) AND d.id = j.document_id
    RETURNING j.id, j.document_id, j.status, j.attempt, j.idempotency_key, j.worker_id, j.lease_expires_at,
              j.created_at, j.started_at, j.completed_at, j.error_message, j.not_before, j.released,
              d.blob_container, d.blob_name, d.filename, d.mime_type, d.size_bytes,
              d.text_extraction_status, d.processing_status, d.status_reason, d.created_at, d.updated_at,
              d.status_entered_at;
END;
$$;
COMMENT ON FUNCTION docstatus.claim_jobs IS
    'Up to p_limit jobs for a worker with that many free slots, as claim_extraction_job claims one '
    '(unheld, of a ''ready'' document, not_before come, longest waiting first, SKIP LOCKED), each '
    'with its document, in no particular order. With p_start_ocr the documents move to (''in progress'', ''ocr running'') '
    'in the same transaction, as mark_ocr_running would. Zero rows when none is free.';

CREATE FUNCTION docstatus.next_job_due() RETURNS interval
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- ORDER BY ... LIMIT 1, not min(): it reads the first entries of extraction_jobs_claimable.
    SELECT c.not_before - now()
      FROM docstatus.extraction_jobs c
      JOIN docstatus.documents d ON d.id = c.document_id
     WHERE docstatus._is_claimable(c.status, c.worker_id, d.text_extraction_status)
     ORDER BY c.not_before, c.id
     LIMIT 1
$$;
COMMENT ON FUNCTION docstatus.next_job_due IS
    'How long until the next job may be claimed: zero or less when one is claimable now, a '
    'positive interval when the next waits for its backoff, NULL when no job waits. The claims'' '
    'own readiness rule, so an idle worker sleeps exactly until a claim can succeed.';

DROP FUNCTION docstatus.validate_document(bigint, boolean, text, text);
CREATE FUNCTION docstatus.validate_document(
    p_document_id bigint, p_blob_retrievable boolean, p_mime_type text, p_reason text DEFAULT NULL,
    p_blob_size bigint DEFAULT NULL)
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
    IF p_blob_size < 0 THEN
        PERFORM docstatus._raise_invalid_argument(format('blob size must not be negative, got %s', p_blob_size));
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

    -- A blob that is not the size registered at upload is not the document that was uploaded.
    IF p_blob_retrievable AND p_blob_size IS DISTINCT FROM v_document.size_bytes
       AND p_blob_size IS NOT NULL AND v_document.size_bytes IS NOT NULL THEN
        v_reason := format('blob not retrievable: blob has %s bytes, the document was registered with %s',
                           p_blob_size, v_document.size_bytes);
    ELSIF NOT p_blob_retrievable THEN
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
    'p_reason: why the blob is not retrievable, appended to status_reason. p_blob_size: the size '
    'of the blob as read; one that differs from the registered size_bytes makes it not retrievable.';

-- The documents still moving. The predicate is that of documents_active_by_status, spelled out
-- here once, so a query on this view reads that index (the 1% still moving), never the rest.
CREATE VIEW docstatus.active_documents AS
SELECT * FROM docstatus.documents
 WHERE text_extraction_status NOT IN ('completed', 'failed');
COMMENT ON VIEW docstatus.active_documents IS
    'Documents in a non-final state (not completed, not failed); reads only documents_active_by_status.';

CREATE OR REPLACE VIEW docstatus.stuck_documents AS
SELECT d.id AS document_id, s.state, d.text_extraction_status, d.processing_status,
       d.status_entered_at, s.max_duration AS sla, now() - d.status_entered_at AS in_state_for,
       j.id AS job_id, j.attempt, j.worker_id, j.lease_expires_at, d.status_reason
  FROM docstatus.stage_slas s
  JOIN docstatus.active_documents d
    ON d.processing_status = s.processing_status
   AND d.text_extraction_status = s.text_extraction_status
   AND d.status_entered_at < now() - s.max_duration
  -- The active job, looked up per stuck document (LIMIT 1 keeps it a lookup, not a join that
  -- reads every active job).
  LEFT JOIN LATERAL (
        SELECT id, attempt, worker_id, lease_expires_at FROM docstatus.extraction_jobs
         WHERE document_id = d.id AND status = 'pending extraction' LIMIT 1) j ON true;

CREATE OR REPLACE VIEW docstatus.document_overview AS
SELECT d.id AS document_id, d.blob_container, d.blob_name, d.filename, d.mime_type, d.size_bytes,
       s.state,
       d.text_extraction_status, d.processing_status, d.status_entered_at,
       now() - d.status_entered_at AS in_status_for, d.status_reason,
       j.id AS job_id, j.status AS job_status, j.attempt, j.worker_id, j.lease_expires_at,
       coalesce(f.error_message, CASE WHEN d.text_extraction_status = 'failed' THEN d.status_reason END)
           AS last_error,
       d.created_at, d.updated_at
  FROM docstatus.documents d
  JOIN docstatus.document_states s
    ON s.text_extraction_status = d.text_extraction_status AND s.processing_status = d.processing_status
  -- The current job is the latest attempt, whatever its status.
  LEFT JOIN LATERAL (
        SELECT id, status, attempt, worker_id, lease_expires_at FROM docstatus.extraction_jobs
         WHERE document_id = d.id ORDER BY attempt DESC LIMIT 1) j ON true
  LEFT JOIN LATERAL (
        SELECT error_message FROM docstatus.extraction_jobs
         WHERE document_id = d.id AND status = 'failed' ORDER BY attempt DESC LIMIT 1) f ON true;

------------------------------------------------------------------------------------------------
-- The worker's end of a job, its result, maintenance, and a document lookup that says DS002
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.finish_job(
    p_document_id bigint, p_text_blob text, p_fields_blob text, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- One transaction: the result is recorded exactly when the job ends done.
    PERFORM docstatus.record_result(p_document_id, p_text_blob, p_fields_blob, p_worker_id);
    RETURN docstatus.mark_processing_done(p_document_id, p_worker_id);
END;
$$;
COMMENT ON FUNCTION docstatus.finish_job IS
    'The end of a successful job: record_result then mark_processing_done, in one transaction, so '
    'a document is done exactly when its result is recorded. Lease rules as mark_ocr_running (DS004).';

CREATE FUNCTION docstatus.current_result(p_document_id bigint) RETURNS SETOF docstatus.document_results
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.*
      FROM docstatus.document_results r
      JOIN docstatus.extraction_jobs j ON j.id = r.job_id
     WHERE r.document_id = p_document_id AND j.status = 'done'
     ORDER BY j.attempt DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION docstatus.current_result IS
    'A document''s result: that of its latest job that ended done; zero rows when it has none '
    '(a row of a job that did not end done is a leftover of an interrupted run).';

CREATE FUNCTION docstatus.require_document(p_document_id bigint) RETURNS docstatus.documents
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
BEGIN
    IF p_document_id IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('document id must not be null');
    END IF;
    SELECT * INTO v_document FROM docstatus.documents WHERE id = p_document_id;
    IF NOT FOUND THEN
        PERFORM docstatus._raise_not_found('document', p_document_id);
    END IF;
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus.require_document IS
    'The document, or DS002 when there is none (as every function that acts on a document says).';

-- What run_maintenance did: one row per reaped job and per newly stuck document, or one row
-- saying it skipped (another session holds the maintenance lock) or that the stuck check failed.
CREATE TYPE docstatus.maintenance_action AS (
    action        text,   -- 'reaped', 'stuck', 'skipped', 'stuck check failed'
    job_id        bigint,
    document_id   bigint,
    attempt       integer,
    worker_id     text,
    error_message text
);
COMMENT ON TYPE docstatus.maintenance_action IS
    'A row of run_maintenance: action reaped (the job, its attempt, the worker whose lease ran out, '
    'the error), stuck (the document newly stuck and its active job), skipped, or stuck check failed '
    '(error_message).';

CREATE FUNCTION docstatus.run_maintenance(p_check_stuck boolean DEFAULT true)
RETURNS SETOF docstatus.maintenance_action
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job docstatus.extraction_jobs;
    v_stuck docstatus.stuck_documents;
BEGIN
    -- One pass at a time across all workers: the transaction that gets the lock does it.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('docstatus.worker.maintenance', 0)) THEN
        RETURN NEXT ROW('skipped', NULL, NULL, NULL, NULL, NULL)::docstatus.maintenance_action;
        RETURN;
    END IF;
    FOR v_job IN SELECT * FROM docstatus.reap_expired_jobs() LOOP
        RETURN NEXT ROW('reaped', v_job.id, v_job.document_id, v_job.attempt, v_job.worker_id,
                        v_job.error_message)::docstatus.maintenance_action;
    END LOOP;
    IF p_check_stuck THEN
        BEGIN  -- a savepoint: a failing check keeps the reaping
            FOR v_stuck IN SELECT * FROM docstatus.check_stuck() LOOP
                RETURN NEXT ROW('stuck', v_stuck.job_id, v_stuck.document_id, v_stuck.attempt,
                                v_stuck.worker_id, NULL)::docstatus.maintenance_action;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            RETURN NEXT ROW('stuck check failed', NULL, NULL, NULL, NULL, SQLERRM)::docstatus.maintenance_action;
        END;
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus.run_maintenance IS
    'One maintenance pass, one session at a time (an advisory lock; the others get one ''skipped'' '
    'row): reap_expired_jobs, then with p_check_stuck check_stuck. Workers call it every few '
    'seconds; cron or pg_cron may too.';

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint),
                       docstatus.require_document(bigint), docstatus.current_result(bigint),
                       docstatus.next_job_due(), docstatus.claim_jobs(text, interval, integer, boolean),
                       docstatus.finish_job(bigint, text, text, text), docstatus.run_maintenance(boolean),
                       docstatus._is_claimable(text, text, text),
                       docstatus._check_claim_arguments(text, interval),
                       docstatus._require_lease(bigint, text, bigint, text, timestamptz, boolean) FROM PUBLIC;
GRANT SELECT ON docstatus.document_states, docstatus.active_documents TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint),
                          docstatus.require_document(bigint) TO docstatus_dms;
GRANT EXECUTE ON FUNCTION docstatus.require_document(bigint),
                          docstatus.current_result(bigint),
                          docstatus.next_job_due() TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.claim_jobs(text, interval, integer, boolean),
                          docstatus.finish_job(bigint, text, text, text),
                          docstatus.run_maintenance(boolean) TO docstatus_worker;
