-- Back to 0007: the functions as they were, without the text limits, the caps and the
-- overflow-proof backoff (rows capped stay capped).

-- The functions go back to the installer; the role docstatus_owner, cluster-wide and maybe used
-- by other databases, is left in place (as the other docstatus roles).
DO $$
DECLARE
    v_function regprocedure;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner') THEN
        RETURN;
    END IF;
    FOR v_function IN
        SELECT p.oid FROM pg_proc p
         WHERE p.pronamespace = 'docstatus'::regnamespace AND p.proowner = 'docstatus_owner'::regrole
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_function, current_user);
    END LOOP;
    REVOKE ALL ON ALL TABLES IN SCHEMA docstatus FROM docstatus_owner;
    ALTER DEFAULT PRIVILEGES IN SCHEMA docstatus REVOKE ALL ON TABLES FROM docstatus_owner;
    REVOKE ALL ON FUNCTION docstatus.maintain_history() FROM docstatus_owner;
    REVOKE ALL ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;

DROP TRIGGER _050_cap_error_message ON docstatus.extraction_jobs;
DROP TRIGGER _050_cap_status_reason ON docstatus.documents;
ALTER TABLE docstatus.extraction_jobs
    DROP CONSTRAINT extraction_jobs_error_message_capped,
    DROP CONSTRAINT extraction_jobs_idempotency_key_text,
    DROP CONSTRAINT extraction_jobs_worker_id_text;
ALTER TABLE docstatus.documents
    DROP CONSTRAINT documents_status_reason_capped,
    DROP CONSTRAINT documents_blob_container_text,
    DROP CONSTRAINT documents_blob_name_text,
    DROP CONSTRAINT documents_filename_text,
    DROP CONSTRAINT documents_mime_type_text;
ALTER TABLE docstatus.document_results DROP CONSTRAINT document_results_blobs_text;

CREATE OR REPLACE FUNCTION docstatus._queue_next_attempt(p_document_id bigint, p_backoff boolean)
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

CREATE OR REPLACE FUNCTION docstatus._require_lease(
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

CREATE OR REPLACE FUNCTION docstatus._check_claim_arguments(p_worker_id text, p_lease interval) RETURNS void
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

CREATE OR REPLACE FUNCTION docstatus.register_document(
    p_blob_container text, p_blob_name text, p_filename text,
    p_mime_type text DEFAULT NULL, p_size_bytes bigint DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
BEGIN
    IF coalesce(p_blob_container, '') = '' OR coalesce(p_blob_name, '') = '' OR coalesce(p_filename, '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('blob container, blob name and filename must be non-empty');
    END IF;
    IF p_size_bytes < 0 THEN
        PERFORM docstatus._raise_invalid_argument(format('size must not be negative, got %s', p_size_bytes));
    END IF;

    INSERT INTO docstatus.documents (blob_container, blob_name, filename, mime_type, size_bytes)
    VALUES (p_blob_container, p_blob_name, p_filename, nullif(p_mime_type, ''), p_size_bytes)
    ON CONFLICT (blob_container, blob_name) DO NOTHING
    RETURNING * INTO v_document;
    IF NOT FOUND THEN
        SELECT * INTO v_document FROM docstatus.documents
         WHERE blob_container = p_blob_container AND blob_name = p_blob_name;
    END IF;
    RETURN v_document;
END;
$$;

CREATE OR REPLACE FUNCTION docstatus.validate_document(
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

CREATE OR REPLACE FUNCTION docstatus.create_extraction_job(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
RETURNS docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_job docstatus.extraction_jobs;
BEGIN
    IF p_idempotency_key = '' THEN
        PERFORM docstatus._raise_invalid_argument('idempotency key must be non-empty or null');
    END IF;
    v_document := docstatus._lock_document(p_document_id);

    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_job FROM docstatus.extraction_jobs
         WHERE document_id = p_document_id AND idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN v_job;
        END IF;
    END IF;

    IF v_document.text_extraction_status <> 'ready' THEN
        PERFORM docstatus._raise_invalid_transition(
            p_document_id, 'job', NULL, 'pending extraction', NULL,
            format('Only a ready document gets an extraction job; document %s is %s.',
                   p_document_id, quote_literal(v_document.text_extraction_status)));
    END IF;

    SELECT * INTO v_job FROM docstatus.extraction_jobs
     WHERE document_id = p_document_id AND status = 'pending extraction';
    IF NOT FOUND THEN
        -- e.g. a raw UPDATE to 'ready' earlier in this transaction.
        RETURN docstatus._insert_job(p_document_id, p_idempotency_key);
    END IF;
    IF v_job.idempotency_key IS NULL AND p_idempotency_key IS NOT NULL THEN
        UPDATE docstatus.extraction_jobs SET idempotency_key = p_idempotency_key
         WHERE id = v_job.id RETURNING * INTO v_job;
    END IF;
    RETURN v_job;
END;
$$;

CREATE OR REPLACE FUNCTION docstatus.heartbeat_job(p_job_id bigint, p_worker_id text, p_lease interval DEFAULT '5 minutes')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_job_id IS NULL OR coalesce(p_worker_id, '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('job id and worker id are required');
    END IF;
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        PERFORM docstatus._raise_invalid_argument(format('lease must be positive, got %s', p_lease));
    END IF;
    UPDATE docstatus.extraction_jobs
       SET lease_expires_at = now() + p_lease
     WHERE id = p_job_id AND status = 'pending extraction'
       AND worker_id = p_worker_id AND lease_expires_at > now();
    IF FOUND THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT FROM docstatus.extraction_jobs WHERE id = p_job_id) THEN
        PERFORM docstatus._raise_not_found('job', p_job_id);
    END IF;
    RETURN false;
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

CREATE OR REPLACE FUNCTION docstatus.retry_document(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
RETURNS docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_job docstatus.extraction_jobs;
BEGIN
    IF p_idempotency_key = '' THEN
        PERFORM docstatus._raise_invalid_argument('idempotency key must be non-empty or null');
    END IF;
    v_document := docstatus._lock_document(p_document_id);
    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_job FROM docstatus.extraction_jobs
         WHERE document_id = p_document_id AND idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN v_job;
        END IF;
    END IF;

    IF v_document.text_extraction_status <> 'failed' THEN
        PERFORM docstatus._raise_invalid_transition(
            p_document_id, 'text_extraction', v_document.text_extraction_status, 'ready', NULL,
            'Only a failed document can be retried.');
    END IF;
    IF NOT EXISTS (SELECT FROM docstatus.extraction_jobs WHERE document_id = p_document_id) THEN
        PERFORM docstatus._raise_invalid_transition(
            p_document_id, 'text_extraction', 'failed', 'ready', NULL,
            'The document failed validation and never had a job: validate it again '
            '(docstatus.validate_document) instead of retrying.');
    END IF;

    UPDATE docstatus.documents
       SET text_extraction_status = 'ready', processing_status = 'pending extraction', status_reason = NULL
     WHERE id = p_document_id;
    RETURN docstatus._insert_job(p_document_id, p_idempotency_key);
END;
$$;

COMMENT ON FUNCTION docstatus.register_document IS
    'Registers an uploaded blob as a ''not ready'' document. The same container and blob again '
    'returns the existing row. DS003 on empty names or a negative size.';
COMMENT ON FUNCTION docstatus.reap_expired_jobs IS
    'Ends every job whose lease ran out: the job and its document fail with an error naming the '
    'worker; while the attempts that count (all but released ones) are fewer than '
    'settings.max_attempts, the document goes back to ''ready'' with a new attempt that waits '
    'for its backoff (settings.retry_base_delay, doubling). Returns the jobs it ended.';

DROP FUNCTION docstatus._reap_job(bigint);
DROP FUNCTION docstatus._retry_delay(integer, interval, interval);
DROP FUNCTION docstatus._cap_error_message();
DROP FUNCTION docstatus._cap_status_reason();
DROP FUNCTION docstatus._cap_text(text, integer);
DROP FUNCTION docstatus._require_text(text, text, integer, boolean);
