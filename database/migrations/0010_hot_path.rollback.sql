-- Back to one history trigger per table, the lease trigger, _record_event, notify_events only.

DROP FUNCTION docstatus.register_documents(text[], text[], text[], text[], bigint[]);

-- Appends one history row and sends its hint. Alerts (failures) always go out; the per-change
-- event only when settings.notify_events is on, because every notifying commit takes one
-- database-wide lock.
CREATE FUNCTION docstatus._record_event(
    p_document_id bigint, p_job_id bigint, p_kind text, p_from text, p_to text, p_detail text,
    p_notify_events boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id bigint;
BEGIN
    INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, detail)
    VALUES (p_document_id, p_job_id, p_kind, p_from, p_to, p_detail)
    RETURNING id INTO v_event_id;

    IF p_notify_events THEN
        PERFORM pg_notify('docstatus_events', json_build_object(
            'event_id', v_event_id, 'document_id', p_document_id, 'job_id', p_job_id,
            'kind', p_kind, 'from', p_from, 'to', p_to, 'at', now())::text);
    END IF;
    IF p_to = 'failed' THEN
        -- The error is cut so the payload stays far below NOTIFY's 8000-byte limit.
        PERFORM pg_notify('docstatus_alerts', json_build_object(
            'event_id', v_event_id, 'document_id', p_document_id, 'job_id', p_job_id,
            'kind', p_kind, 'from', p_from, 'to', p_to, 'at', now(),
            'error', left(p_detail, 500))::text);
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._record_event IS 'Internal: appends to status_events and NOTIFYs.';

CREATE OR REPLACE FUNCTION docstatus._documents_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status THEN
        PERFORM docstatus._require_transition(
            OLD.id, 'text_extraction', OLD.text_extraction_status, NEW.text_extraction_status);
    END IF;
    IF NEW.processing_status IS DISTINCT FROM OLD.processing_status THEN
        PERFORM docstatus._require_transition(
            OLD.id, 'processing', OLD.processing_status, NEW.processing_status);
        NEW.status_entered_at := now();
    ELSIF NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status THEN
        NEW.status_entered_at := now();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Every job of an in-progress document has a lease, so the reaper covers it even when a
-- document was moved by hand: a job that nobody holds goes to the session's login role.
CREATE FUNCTION docstatus._documents_hold_job_on_ocr() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE docstatus.extraction_jobs
       SET worker_id = session_user,
           lease_expires_at = now() + (SELECT default_lease FROM docstatus.settings),
           started_at = coalesce(started_at, now())
     WHERE document_id = NEW.id AND status = 'pending extraction' AND worker_id IS NULL;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION docstatus._documents_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_notify boolean := (SELECT notify_events FROM docstatus.settings);
    v_old_text text;
    v_old_processing text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_old_text := OLD.text_extraction_status;
        v_old_processing := OLD.processing_status;
    END IF;
    IF NEW.text_extraction_status IS DISTINCT FROM v_old_text THEN
        PERFORM docstatus._record_event(NEW.id, NULL, 'text_extraction', v_old_text,
                                        NEW.text_extraction_status, NEW.status_reason, v_notify);
    END IF;
    IF NEW.processing_status IS DISTINCT FROM v_old_processing THEN
        PERFORM docstatus._record_event(NEW.id, NULL, 'processing', v_old_processing,
                                        NEW.processing_status, NEW.status_reason, v_notify);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER _300_hold_job_on_ocr AFTER UPDATE OF processing_status ON docstatus.documents
    FOR EACH ROW WHEN (NEW.processing_status = 'ocr running' AND OLD.processing_status <> 'ocr running')
    EXECUTE FUNCTION docstatus._documents_hold_job_on_ocr();
CREATE TRIGGER _500_history_update AFTER UPDATE ON docstatus.documents
    FOR EACH ROW WHEN (NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status
                       OR NEW.processing_status IS DISTINCT FROM OLD.processing_status)
    EXECUTE FUNCTION docstatus._documents_record_history();

CREATE OR REPLACE FUNCTION docstatus._jobs_before_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM docstatus._require_transition(OLD.document_id, 'job', OLD.status, NEW.status, OLD.id);
    -- Every transition out of 'pending extraction' is terminal: callers cannot forget the stamp.
    NEW.completed_at := now();
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION docstatus._jobs_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_old_status text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_old_status := OLD.status;
    END IF;
    PERFORM docstatus._record_event(NEW.document_id, NEW.id, 'job', v_old_status, NEW.status,
                                    NEW.error_message, (SELECT notify_events FROM docstatus.settings));
    RETURN NULL;
END;
$$;

CREATE TRIGGER _500_history_update AFTER UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION docstatus._jobs_record_history();

DROP FUNCTION docstatus._send_event_hints(bigint, bigint, bigint, text, text, text, text, boolean);
DROP FUNCTION docstatus._event_hint_due();
DROP TABLE docstatus.notify_throttle;
ALTER TABLE docstatus.settings DROP COLUMN notify_mode, DROP COLUMN notify_interval;
REVOKE ALL ON FUNCTION docstatus._record_event(bigint, bigint, text, text, text, text, boolean),
                       docstatus._documents_hold_job_on_ocr() FROM PUBLIC;

ALTER TABLE docstatus.status_events DROP CONSTRAINT status_events_pkey;
ALTER TABLE docstatus.status_events ADD PRIMARY KEY (id, occurred_at);
CREATE INDEX status_events_by_document ON docstatus.status_events (document_id, id);
