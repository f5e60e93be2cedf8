-- Hardening found by an outside reliability suite: the retry delay is capped before it can
-- overflow, whatever settings the CHECKs accept, and one job the reaper cannot end no longer
-- stops it for every other; every text argument has a documented maximum length (DS003 instead
-- of 54000 from a btree index) and a blank name is an empty one; error_message and status_reason
-- keep their first 4 KB whoever writes them.
-- depends: 0007_history_partitions

------------------------------------------------------------------------------------------------
-- Text arguments: non-blank, of a documented maximum length
------------------------------------------------------------------------------------------------

-- The one check of a text argument (DS003, naming the argument): NULL or only whitespace is
-- empty; p_nullable accepts NULL (an optional argument) but still refuses a blank one. Length
-- first: the blank test then reads at most p_max_chars characters.
CREATE FUNCTION docstatus._require_text(
    p_argument text, p_value text, p_max_chars integer, p_nullable boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NULL THEN
        IF NOT p_nullable THEN
            RAISE EXCEPTION '% must be non-empty', p_argument USING ERRCODE = 'DS003',
                  DETAIL = json_build_object('argument', p_argument, 'max_chars', p_max_chars)::text;
        END IF;
        RETURN;
    END IF;
    IF char_length(p_value) > p_max_chars THEN
        RAISE EXCEPTION '% must be at most % characters, got %', p_argument, p_max_chars, char_length(p_value)
              USING ERRCODE = 'DS003',
                    DETAIL = json_build_object('argument', p_argument, 'max_chars', p_max_chars,
                                               'chars', char_length(p_value))::text;
    END IF;
    IF p_value !~ '\S' THEN
        RAISE EXCEPTION '% must be non-empty%', p_argument, CASE WHEN p_nullable THEN ' or null' ELSE '' END
              USING ERRCODE = 'DS003',
                    DETAIL = json_build_object('argument', p_argument, 'max_chars', p_max_chars)::text,
                    HINT = 'A value made only of whitespace counts as empty.';
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._require_text IS
    'Internal: DS003 naming the argument unless the text is non-blank and at most p_max_chars '
    'characters (NULL allowed with p_nullable).';

-- The same limits as CHECKs, so a raw INSERT or UPDATE obeys them too. The blob name also has a
-- byte limit: (container, blob name) is a unique btree key, whose entries must stay under
-- about 2.7 KB whatever the characters.
ALTER TABLE docstatus.documents
    ADD CONSTRAINT documents_blob_container_text
        CHECK (char_length(blob_container) <= 63 AND blob_container ~ '\S') NOT VALID,
    ADD CONSTRAINT documents_blob_name_text
        CHECK (char_length(blob_name) <= 1024 AND octet_length(blob_name) <= 2048 AND blob_name ~ '\S') NOT VALID,
    ADD CONSTRAINT documents_filename_text
        CHECK (char_length(filename) <= 1024 AND filename ~ '\S') NOT VALID,
    ADD CONSTRAINT documents_mime_type_text CHECK (char_length(mime_type) <= 255) NOT VALID;
ALTER TABLE docstatus.documents VALIDATE CONSTRAINT documents_blob_container_text;
ALTER TABLE docstatus.documents VALIDATE CONSTRAINT documents_blob_name_text;
ALTER TABLE docstatus.documents VALIDATE CONSTRAINT documents_filename_text;
ALTER TABLE docstatus.documents VALIDATE CONSTRAINT documents_mime_type_text;

ALTER TABLE docstatus.extraction_jobs
    ADD CONSTRAINT extraction_jobs_idempotency_key_text
        CHECK (char_length(idempotency_key) <= 200 AND idempotency_key ~ '\S') NOT VALID,
    ADD CONSTRAINT extraction_jobs_worker_id_text
        CHECK (char_length(worker_id) <= 200 AND worker_id ~ '\S') NOT VALID;
ALTER TABLE docstatus.extraction_jobs VALIDATE CONSTRAINT extraction_jobs_idempotency_key_text;
ALTER TABLE docstatus.extraction_jobs VALIDATE CONSTRAINT extraction_jobs_worker_id_text;

ALTER TABLE docstatus.document_results
    ADD CONSTRAINT document_results_blobs_text
        CHECK (char_length(text_blob) <= 1024 AND char_length(fields_blob) <= 1024) NOT VALID;
ALTER TABLE docstatus.document_results VALIDATE CONSTRAINT document_results_blobs_text;

------------------------------------------------------------------------------------------------
-- error_message and status_reason: the first 4 KB, whoever writes them
------------------------------------------------------------------------------------------------

-- Keeps a text within p_max_bytes bytes: its first characters, then ' ... [cut N bytes]'.
-- A character is at most 4 bytes, so each round of the loop removes enough to end in a few.
CREATE FUNCTION docstatus._cap_text(p_text text, p_max_bytes integer DEFAULT 4096) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_bytes integer := octet_length(p_text);
    -- Room for the suffix: ' ... [cut 2147483647 bytes]' is 27 bytes.
    v_room integer := p_max_bytes - 32;
    v_kept text;
BEGIN
    IF v_bytes IS NULL OR v_bytes <= p_max_bytes THEN
        RETURN p_text;
    END IF;
    v_kept := left(p_text, v_room);
    WHILE octet_length(v_kept) > v_room LOOP
        v_kept := left(v_kept, char_length(v_kept) - greatest(1, (octet_length(v_kept) - v_room) / 4));
    END LOOP;
    RETURN v_kept || format(' ... [cut %s bytes]', v_bytes - octet_length(v_kept));
END;
$$;
COMMENT ON FUNCTION docstatus._cap_text IS
    'Internal: the text if it fits p_max_bytes bytes, else its first characters and '' ... [cut N bytes]''.';

CREATE FUNCTION docstatus._cap_error_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.error_message := docstatus._cap_text(NEW.error_message);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION docstatus._cap_error_message IS 'Internal trigger: error_message keeps its first 4096 bytes.';

CREATE FUNCTION docstatus._cap_status_reason() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.status_reason := docstatus._cap_text(NEW.status_reason);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION docstatus._cap_status_reason IS 'Internal trigger: status_reason keeps its first 4096 bytes.';

-- Fired only for a text over the limit (the WHEN clause costs no function call), first of the
-- BEFORE triggers: the triggers after it (the history written with the change) see the capped text.
CREATE TRIGGER _050_cap_error_message BEFORE INSERT OR UPDATE OF error_message ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (octet_length(NEW.error_message) > 4096) EXECUTE FUNCTION docstatus._cap_error_message();
CREATE TRIGGER _050_cap_status_reason BEFORE INSERT OR UPDATE OF status_reason ON docstatus.documents
    FOR EACH ROW WHEN (octet_length(NEW.status_reason) > 4096) EXECUTE FUNCTION docstatus._cap_status_reason();

-- Rows written before: capped by the triggers above (the statuses do not change).
UPDATE docstatus.extraction_jobs SET error_message = error_message WHERE octet_length(error_message) > 4096;
UPDATE docstatus.documents SET status_reason = status_reason WHERE octet_length(status_reason) > 4096;

ALTER TABLE docstatus.extraction_jobs
    ADD CONSTRAINT extraction_jobs_error_message_capped CHECK (octet_length(error_message) <= 4096);
ALTER TABLE docstatus.documents
    ADD CONSTRAINT documents_status_reason_capped CHECK (octet_length(status_reason) <= 4096);

------------------------------------------------------------------------------------------------
-- Backoff that cannot overflow, a reaper that one job cannot stop
------------------------------------------------------------------------------------------------

-- retry_base_delay * 2^(failures - 1), at most retry_max_delay, and the exponent at most 30
-- (as since 0004). The doubling is computed only while it stays below the cap (fewer doublings
-- than log2(max / base)), so it never overflows an interval (or a float), for any base, cap and
-- number of failures the CHECKs accept.
CREATE FUNCTION docstatus._retry_delay(p_failures integer, p_base interval, p_max interval) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_failures <= 1 OR p_base <= interval '0' THEN least(p_base, p_max)
        WHEN p_failures - 1 >= ceil(log(2, extract(epoch FROM p_max) / extract(epoch FROM p_base))) THEN p_max
        ELSE least(p_max, p_base * power(2, least(p_failures - 1, 30)))
    END
$$;
COMMENT ON FUNCTION docstatus._retry_delay IS
    'Internal: how long the next attempt waits after p_failures counted failures: p_base doubling '
    'per failure, at most p_max; never overflows.';

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
        v_delay := docstatus._retry_delay(v_counted, v_settings.retry_base_delay, v_settings.retry_max_delay);
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

-- Ends one job whose lease ran out, as reap_expired_jobs describes; NULL when it is not (or no
-- longer) such a job. The caller holds the document's lock.
CREATE FUNCTION docstatus._reap_job(p_job_id bigint) RETURNS docstatus.extraction_jobs
LANGUAGE plpgsql AS $$
DECLARE
    v_job docstatus.extraction_jobs;
    v_error text;
BEGIN
    SELECT * INTO v_job FROM docstatus.extraction_jobs WHERE id = p_job_id FOR UPDATE;
    IF v_job.status <> 'pending extraction' OR v_job.worker_id IS NULL OR v_job.lease_expires_at > now() THEN
        RETURN NULL;
    END IF;
    v_error := format('lease expired: worker %s held the job until %s', v_job.worker_id, v_job.lease_expires_at);
    UPDATE docstatus.extraction_jobs SET status = 'failed', error_message = v_error
     WHERE id = v_job.id RETURNING * INTO v_job;
    UPDATE docstatus.documents
       SET text_extraction_status = 'failed', processing_status = 'failed', status_reason = v_error
     WHERE id = v_job.document_id;
    PERFORM docstatus._queue_next_attempt(v_job.document_id, true);
    RETURN v_job;
END;
$$;
COMMENT ON FUNCTION docstatus._reap_job IS
    'Internal: fails one job whose lease ran out and queues the next attempt (NULL if not expired).';

-- The whole pass runs in one subtransaction (one savepoint, whatever the number of jobs). If
-- any job fails, the pass is undone and done again job by job, each in its own subtransaction,
-- so a job that cannot be ended (a WARNING names it; it stays expired for the next pass) never
-- keeps the others from being reaped.
CREATE OR REPLACE FUNCTION docstatus.reap_expired_jobs()
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job_id bigint;
    v_job docstatus.extraction_jobs;
    v_reaped docstatus.extraction_jobs[] := '{}';
BEGIN
    -- Documents are locked before jobs, in the same order as the mark_* functions, so the
    -- reaper and a worker never deadlock; a document somebody else holds is left for next time.
    BEGIN
        FOR v_job_id IN
            SELECT j.id FROM docstatus.extraction_jobs j
              JOIN docstatus.documents d ON d.id = j.document_id
             WHERE j.status = 'pending extraction' AND j.worker_id IS NOT NULL AND j.lease_expires_at <= now()
             ORDER BY j.lease_expires_at
               FOR UPDATE OF d SKIP LOCKED
        LOOP
            v_job := docstatus._reap_job(v_job_id);
            IF v_job.id IS NOT NULL THEN
                v_reaped := v_reaped || v_job;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        v_reaped := '{}';
        FOR v_job_id IN
            SELECT j.id FROM docstatus.extraction_jobs j
              JOIN docstatus.documents d ON d.id = j.document_id
             WHERE j.status = 'pending extraction' AND j.worker_id IS NOT NULL AND j.lease_expires_at <= now()
             ORDER BY j.lease_expires_at
               FOR UPDATE OF d SKIP LOCKED
        LOOP
            BEGIN
                v_job := docstatus._reap_job(v_job_id);
                IF v_job.id IS NOT NULL THEN
                    v_reaped := v_reaped || v_job;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'docstatus: the reaper could not end job %: % (SQLSTATE %)', v_job_id, SQLERRM, SQLSTATE
                      USING DETAIL = json_build_object('job_id', v_job_id, 'sqlstate', SQLSTATE)::text;
            END;
        END LOOP;
    END;
    RETURN QUERY SELECT * FROM unnest(v_reaped);
END;
$$;
COMMENT ON FUNCTION docstatus.reap_expired_jobs IS
    'Ends every job whose lease ran out: the job and its document fail with an error naming the '
    'worker; while the attempts that count (all but released ones) are fewer than '
    'settings.max_attempts, the document goes back to ''ready'' with a new attempt that waits '
    'for its backoff (settings.retry_base_delay, doubling). A job that cannot be ended is named '
    'in a WARNING and left for the next pass; the others are reaped. Returns the jobs it ended.';

------------------------------------------------------------------------------------------------
-- The API checks its text arguments (bodies as before, plus _require_text)
------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION docstatus._require_lease(
    p_document_id bigint, p_worker_id text, p_job_id bigint, p_holder text, p_lease_expires_at timestamptz,
    p_must_be_held boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM docstatus._require_text('worker id', p_worker_id, 200, p_nullable => true);
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
    PERFORM docstatus._require_text('worker id', p_worker_id, 200);
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
    -- The Azure limits: a container name has at most 63 characters, a blob name 1024.
    PERFORM docstatus._require_text('blob container', p_blob_container, 63);
    PERFORM docstatus._require_text('blob name', p_blob_name, 1024);
    IF octet_length(p_blob_name) > 2048 THEN
        PERFORM docstatus._raise_invalid_argument(
            format('blob name must be at most 2048 bytes, got %s', octet_length(p_blob_name)));
    END IF;
    PERFORM docstatus._require_text('filename', p_filename, 1024);
    PERFORM docstatus._require_text('MIME type', nullif(btrim(p_mime_type), ''), 255, p_nullable => true);
    IF p_size_bytes < 0 THEN
        PERFORM docstatus._raise_invalid_argument(format('size must not be negative, got %s', p_size_bytes));
    END IF;

    INSERT INTO docstatus.documents (blob_container, blob_name, filename, mime_type, size_bytes)
    VALUES (p_blob_container, p_blob_name, p_filename, nullif(btrim(p_mime_type), ''), p_size_bytes)
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
    PERFORM docstatus._require_text('MIME type', v_mime, 255, p_nullable => true);
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
    PERFORM docstatus._require_text('idempotency key', p_idempotency_key, 200, p_nullable => true);
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
    IF p_job_id IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('job id and worker id are required');
    END IF;
    PERFORM docstatus._require_text('worker id', p_worker_id, 200);
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
    PERFORM docstatus._require_text('text blob name', p_text_blob, 1024);
    PERFORM docstatus._require_text('fields blob name', p_fields_blob, 1024);
    PERFORM docstatus._require_text('worker id', p_worker_id, 200, p_nullable => true);
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
    IF p_job_id IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('job id and worker id are required');
    END IF;
    PERFORM docstatus._require_text('worker id', p_worker_id, 200);
    IF char_length(p_reason) > 1000 THEN
        PERFORM docstatus._raise_invalid_argument(
            format('release reason must be at most 1000 characters, got %s', char_length(p_reason)));
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
    PERFORM docstatus._require_text('idempotency key', p_idempotency_key, 200, p_nullable => true);
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
    'returns the existing row. DS003 on a blank or too long name (container 63 characters, blob '
    'name 1024 characters and 2048 bytes, filename 1024, MIME type 255) or a negative size.';

------------------------------------------------------------------------------------------------
-- Grants: the new helpers are internal
------------------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION docstatus._require_text(text, text, integer, boolean),
                       docstatus._cap_text(text, integer),
                       docstatus._cap_error_message(),
                       docstatus._cap_status_reason(),
                       docstatus._retry_delay(integer, interval, interval),
                       docstatus._reap_job(bigint) FROM PUBLIC;

------------------------------------------------------------------------------------------------
-- docstatus_owner: the functions run with the rights on docstatus's tables, nothing more
------------------------------------------------------------------------------------------------

-- Every function of the schema is owned by a NOLOGIN role that may read and write the tables of
-- docstatus and nothing else, so a mistake in a SECURITY DEFINER function cannot reach beyond
-- the schema, as it could with the installer's (often superuser) rights. maintain_history and
-- its partition helpers stay the installer's: creating, attaching and dropping partitions needs
-- the ownership of status_events (and pg_partman's rights). Tables created later by the installer
-- get the same rights (default privileges), so a function reading a new table keeps working.
-- Creating the role needs CREATEROLE: without it, the installer keeps owning the functions.
DO $$
DECLARE
    v_installer pg_roles;
    v_function regprocedure;
    v_table regclass;
BEGIN
    SELECT * INTO v_installer FROM pg_roles WHERE rolname = current_user;
    -- Handing a function over needs membership in the new owner: a superuser has it, a role with
    -- CREATEROLE may create the role and grant it to itself, anybody else must have been granted it.
    IF NOT (v_installer.rolsuper OR v_installer.rolcreaterole) THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
           OR NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
            RAISE NOTICE 'docstatus: % may not create roles and is no member of docstatus_owner, so the '
                         'functions stay owned by it', current_user
                  USING HINT = 'As a role with CREATEROLE: CREATE ROLE docstatus_owner NOLOGIN, GRANT it '
                               'to the installer, then install again.';
            RETURN;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner') THEN
        CREATE ROLE docstatus_owner NOLOGIN;
    END IF;
    IF NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
        EXECUTE format('GRANT docstatus_owner TO %I', current_user);
    END IF;
    -- event_delivery_delay reads the transactions of every session in pg_stat_activity.
    IF v_installer.rolsuper THEN
        GRANT pg_read_all_stats TO docstatus_owner;
    END IF;

    GRANT USAGE, CREATE ON SCHEMA docstatus TO docstatus_owner;
    FOR v_table IN
        SELECT c.oid FROM pg_class c
         WHERE c.relnamespace = 'docstatus'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.relname
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON TABLE %s TO docstatus_owner', v_table);
    END LOOP;
    FOR v_table IN
        SELECT c.oid FROM pg_class c
         WHERE c.relnamespace = 'docstatus'::regnamespace AND c.relkind = 'v' ORDER BY c.relname
    LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO docstatus_owner', v_table);
    END LOOP;
    ALTER DEFAULT PRIVILEGES IN SCHEMA docstatus GRANT SELECT, INSERT, UPDATE ON TABLES TO docstatus_owner;
    GRANT EXECUTE ON FUNCTION docstatus.maintain_history() TO docstatus_owner;
    FOR v_function IN
        SELECT p.oid FROM pg_proc p
         WHERE p.pronamespace = 'docstatus'::regnamespace
           AND p.proname NOT IN ('maintain_history', '_create_history_partition', '_create_history_partitions',
                                 '_protect_history_partition', '_guard_history')
         ORDER BY p.oid
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO docstatus_owner', v_function);
    END LOOP;
    -- A new owner needs CREATE on the schema (a superuser installer skips that check): only
    -- for the hand-over.
    REVOKE CREATE ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;
