-- Back to 0010: one hint decision and one history INSERT per event, the caps as triggers with
-- WHEN clauses, the WHEN clauses of the job transition trigger and of the document agreement
-- check, and claim_jobs as 0010 left it.

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


CREATE OR REPLACE FUNCTION docstatus._cap_error_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.error_message := docstatus._cap_text(NEW.error_message);
    RETURN NEW;
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
