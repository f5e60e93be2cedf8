-- Back to 0010: one hint decision per event, the caps as triggers of their own, the job
-- transition trigger with its WHEN clause, the document agreement check on every status change,
-- and the API functions as 0010 left them.

CREATE FUNCTION docstatus._event_hint_due() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_mode text;
    v_interval interval;
BEGIN
    SELECT CASE WHEN notify_events THEN notify_mode ELSE 'off' END, notify_interval
      INTO v_mode, v_interval FROM docstatus.settings;
    IF v_mode = 'each' THEN
        RETURN true;
    ELSIF v_mode = 'off' OR current_setting('docstatus.event_hint_sent', true) = 'on' THEN
        RETURN false;
    END IF;
    PERFORM set_config('docstatus.event_hint_sent', 'on', true);
    IF v_mode = 'per_transaction' THEN
        RETURN true;
    END IF;
    UPDATE docstatus.notify_throttle SET last_sent_at = clock_timestamp()
     WHERE channel = (SELECT channel FROM docstatus.notify_throttle
                       WHERE channel = 'docstatus_events' AND last_sent_at <= clock_timestamp() - v_interval
                         FOR UPDATE SKIP LOCKED);
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION docstatus._event_hint_due IS
    'Internal: whether the event being written sends its docstatus_events hint under settings.notify_mode.';

REVOKE ALL ON FUNCTION docstatus._event_hint_due() FROM PUBLIC;

CREATE OR REPLACE FUNCTION docstatus._documents_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A document starts uploaded; an unknown status is left to the column's CHECK (23514).
    IF NEW.text_extraction_status <> 'not ready'
       AND docstatus._is_known_status('text_extraction', NEW.text_extraction_status) THEN
        PERFORM docstatus._raise_invalid_transition(NEW.id, 'text_extraction', NULL, NEW.text_extraction_status);
    END IF;
    IF NEW.processing_status <> 'pending extraction'
       AND docstatus._is_known_status('processing', NEW.processing_status) THEN
        PERFORM docstatus._raise_invalid_transition(NEW.id, 'processing', NULL, NEW.processing_status);
    END IF;
    NEW.status_entered_at := now();
    RETURN NEW;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._documents_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id bigint;
BEGIN
    INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
    VALUES (NEW.id, 'text_extraction', NULL, NEW.text_extraction_status, NEW.status_reason)
    RETURNING id INTO v_event_id;
    IF docstatus._event_hint_due() THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.id, NULL, 'text_extraction', NULL,
                                            NEW.text_extraction_status, NEW.status_reason, true);
    END IF;
    INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
    VALUES (NEW.id, 'processing', NULL, NEW.processing_status, NEW.status_reason)
    RETURNING id INTO v_event_id;
    IF docstatus._event_hint_due() THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.id, NULL, 'processing', NULL,
                                            NEW.processing_status, NEW.status_reason, true);
    END IF;
    RETURN NULL;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._documents_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_text_changed boolean := NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status;
    v_processing_changed boolean := NEW.processing_status IS DISTINCT FROM OLD.processing_status;
    v_edges integer;
    v_event_id bigint;
    v_hint boolean;
BEGIN
    IF v_text_changed OR v_processing_changed THEN
        SELECT count(*) INTO v_edges FROM docstatus.status_transitions
         WHERE (kind, from_status, to_status) IN (
                   ('text_extraction', OLD.text_extraction_status, NEW.text_extraction_status),
                   ('processing', OLD.processing_status, NEW.processing_status));
        IF v_edges < v_text_changed::integer + v_processing_changed::integer THEN
            IF v_text_changed THEN
                PERFORM docstatus._require_transition(
                    OLD.id, 'text_extraction', OLD.text_extraction_status, NEW.text_extraction_status);
            END IF;
            IF v_processing_changed THEN
                PERFORM docstatus._require_transition(
                    OLD.id, 'processing', OLD.processing_status, NEW.processing_status);
            END IF;
        END IF;
        NEW.status_entered_at := now();
    END IF;
    NEW.updated_at := now();

    IF v_processing_changed AND NEW.processing_status = 'ocr running' THEN
        UPDATE docstatus.extraction_jobs
           SET worker_id = session_user,
               lease_expires_at = now() + (SELECT default_lease FROM docstatus.settings),
               started_at = coalesce(started_at, now())
         WHERE document_id = NEW.id AND status = 'pending extraction' AND worker_id IS NULL;
    END IF;

    IF v_text_changed THEN
        INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
        VALUES (NEW.id, 'text_extraction', OLD.text_extraction_status, NEW.text_extraction_status, NEW.status_reason)
        RETURNING id INTO v_event_id;
        v_hint := docstatus._event_hint_due();
        IF v_hint OR NEW.text_extraction_status = 'failed' THEN
            PERFORM docstatus._send_event_hints(
                v_event_id, NEW.id, NULL, 'text_extraction', OLD.text_extraction_status,
                NEW.text_extraction_status, NEW.status_reason, v_hint);
        END IF;
    END IF;
    IF v_processing_changed THEN
        INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
        VALUES (NEW.id, 'processing', OLD.processing_status, NEW.processing_status, NEW.status_reason)
        RETURNING id INTO v_event_id;
        v_hint := docstatus._event_hint_due();
        IF v_hint OR NEW.processing_status = 'failed' THEN
            PERFORM docstatus._send_event_hints(
                v_event_id, NEW.id, NULL, 'processing', OLD.processing_status,
                NEW.processing_status, NEW.status_reason, v_hint);
        END IF;
    END IF;
    RETURN NEW;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._jobs_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'pending extraction' AND docstatus._is_known_status('job', NEW.status) THEN
        PERFORM docstatus._raise_invalid_transition(NEW.document_id, 'job', NULL, NEW.status, NEW.id);
    END IF;
    RETURN NEW;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._jobs_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id bigint;
BEGIN
    INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, detail)
    VALUES (NEW.document_id, NEW.id, 'job', NULL, NEW.status, NEW.error_message)
    RETURNING id INTO v_event_id;
    IF docstatus._event_hint_due() THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.document_id, NEW.id, 'job', NULL,
                                            NEW.status, NEW.error_message, true);
    END IF;
    RETURN NULL;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._jobs_before_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id bigint;
    v_hint boolean;
BEGIN
    PERFORM FROM docstatus.status_transitions
     WHERE kind = 'job' AND from_status = OLD.status AND to_status = NEW.status;
    IF NOT FOUND THEN
        PERFORM docstatus._require_transition(OLD.document_id, 'job', OLD.status, NEW.status, OLD.id);
    END IF;
    -- Every transition out of 'pending extraction' is terminal: callers cannot forget the stamp.
    NEW.completed_at := now();
    INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, detail)
    VALUES (NEW.document_id, NEW.id, 'job', OLD.status, NEW.status, NEW.error_message)
    RETURNING id INTO v_event_id;
    v_hint := docstatus._event_hint_due();
    IF v_hint OR NEW.status = 'failed' THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.document_id, NEW.id, 'job', OLD.status,
                                            NEW.status, NEW.error_message, v_hint);
    END IF;
    RETURN NEW;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._documents_check_agreement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM docstatus._check_document_job_agreement(NEW.id);
    RETURN NULL;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._jobs_check_agreement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM docstatus._check_document_job_agreement(NEW.document_id);
    RETURN NULL;
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


CREATE OR REPLACE FUNCTION docstatus.claim_jobs(
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


CREATE FUNCTION docstatus._cap_status_reason() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.status_reason := docstatus._cap_text(NEW.status_reason);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION docstatus._cap_status_reason IS 'Internal trigger: status_reason keeps its first 4096 bytes.';
REVOKE ALL ON FUNCTION docstatus._cap_status_reason() FROM PUBLIC;

DROP TRIGGER _100_check_transition ON docstatus.extraction_jobs;
CREATE TRIGGER _100_check_transition BEFORE UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION docstatus._jobs_before_status_change();

DROP TRIGGER _050_cap_error_message ON docstatus.extraction_jobs;
CREATE TRIGGER _050_cap_error_message BEFORE INSERT OR UPDATE OF error_message ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (octet_length(NEW.error_message) > 4096) EXECUTE FUNCTION docstatus._cap_error_message();

CREATE TRIGGER _050_cap_status_reason BEFORE INSERT OR UPDATE OF status_reason ON docstatus.documents
    FOR EACH ROW WHEN (octet_length(NEW.status_reason) > 4096) EXECUTE FUNCTION docstatus._cap_status_reason();

DROP TRIGGER _800_documents_agree_with_jobs ON docstatus.documents;
CREATE CONSTRAINT TRIGGER _800_documents_agree_with_jobs
    AFTER UPDATE OF text_extraction_status ON docstatus.documents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status)
    EXECUTE FUNCTION docstatus._documents_check_agreement();

DROP FUNCTION docstatus._event_hints_due();

-- The recreated functions run as docstatus_owner, as in 0010.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
       OR NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
        RETURN;
    END IF;
    GRANT CREATE ON SCHEMA docstatus TO docstatus_owner;
    ALTER FUNCTION docstatus._event_hint_due() OWNER TO docstatus_owner;
    ALTER FUNCTION docstatus._cap_status_reason() OWNER TO docstatus_owner;
    REVOKE CREATE ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;
