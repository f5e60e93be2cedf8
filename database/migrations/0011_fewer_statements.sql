-- The hot path in fewer statements. PostgreSQL 15 prepares every CHECK constraint and every
-- trigger WHEN clause of a table again for each statement that writes it (it parses their
-- stored text), and each statement run inside a function pays an executor start. So:
-- - a trigger call writes its history rows in one INSERT (two rows when both status columns
--   move) and reads the graph, the notify mode and the job it may hold with one lookup;
-- - one hint decision per trigger call (_event_hints_due) instead of one per event;
-- - the 4096-byte caps run inside the BEFORE triggers that fire anyway (an update that sets
--   error_message alone keeps a cap trigger of its own), the job transition trigger tests inside
--   its function: no WHEN clause is prepared on every update any more; the document side of the
--   agreement check fires only when a document enters or leaves the states with an active job;
-- - claim_jobs(p_start_ocr) holds the jobs before it moves their documents, so each job is
--   updated once, not twice.
-- The rows in status_events, the notifications, the errors and the checks are the same.
-- depends: 0010_hot_path

------------------------------------------------------------------------------------------------
-- Hints: one decision per trigger call
------------------------------------------------------------------------------------------------

-- Which events of one trigger call send their docstatus_events hint, by settings.notify_mode
-- (notify_events = false is 'off'): 'each' (every event), 'first' (the first event of this call
-- is the one hint of its transaction, or of its throttle interval), or 'none'. Every
-- transaction that NOTIFYs takes one database-wide lock from its commit until the commit is
-- flushed, so the cheaper modes notify less: per_transaction once per transaction (a
-- transaction-local flag, reverted with a rolled-back savepoint as its NOTIFY is), throttled once
-- per notify_interval across all writers. The throttle row is taken with SKIP LOCKED: a writer
-- never waits for it, it sends nothing when another has it. The triggers that already read
-- settings decide 'each' and 'off' themselves and call this for the other two modes only.
CREATE FUNCTION docstatus._event_hints_due() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_mode text;
    v_interval interval;
BEGIN
    SELECT CASE WHEN notify_events THEN notify_mode ELSE 'off' END, notify_interval
      INTO v_mode, v_interval FROM docstatus.settings;
    IF v_mode = 'each' THEN
        RETURN 'each';
    ELSIF v_mode = 'off' OR current_setting('docstatus.event_hint_sent', true) = 'on' THEN
        RETURN 'none';
    END IF;
    PERFORM set_config('docstatus.event_hint_sent', 'on', true);
    IF v_mode = 'per_transaction' THEN
        RETURN 'first';
    END IF;
    UPDATE docstatus.notify_throttle SET last_sent_at = clock_timestamp()
     WHERE channel = (SELECT channel FROM docstatus.notify_throttle
                       WHERE channel = 'docstatus_events' AND last_sent_at <= clock_timestamp() - v_interval
                         FOR UPDATE SKIP LOCKED);
    RETURN CASE WHEN FOUND THEN 'first' ELSE 'none' END;
END;
$$;
COMMENT ON FUNCTION docstatus._event_hints_due IS
    'Internal: which events of one trigger call send their docstatus_events hint under '
    'settings.notify_mode: each, first or none.';
REVOKE ALL ON FUNCTION docstatus._event_hints_due() FROM PUBLIC;

------------------------------------------------------------------------------------------------
-- Documents: the cap inside the BEFORE triggers, history in one INSERT per change
------------------------------------------------------------------------------------------------

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
    IF octet_length(NEW.status_reason) > 4096 THEN
        NEW.status_reason := docstatus._cap_text(NEW.status_reason);
    END IF;
    NEW.status_entered_at := now();
    RETURN NEW;
END;
$$;


-- Inserts keep an AFTER trigger for their history: INSERT ... ON CONFLICT DO NOTHING runs
-- BEFORE triggers for rows it then skips.
CREATE OR REPLACE FUNCTION docstatus._documents_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_hints text := docstatus._event_hints_due();
    v_sent bigint;
BEGIN
    WITH event AS (
        INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
        VALUES (NEW.id, 'text_extraction', NULL, NEW.text_extraction_status, NEW.status_reason),
               (NEW.id, 'processing', NULL, NEW.processing_status, NEW.status_reason)
        RETURNING id, kind, to_status)
    SELECT count(docstatus._send_event_hints(
                     event.id, NEW.id, NULL, event.kind, NULL, event.to_status, NEW.status_reason,
                     v_hints = 'each' OR (v_hints = 'first' AND event.kind = 'text_extraction')))
      INTO v_sent FROM event
     WHERE v_hints <> 'none' OR event.to_status = 'failed';
    RETURN NULL;
END;
$$;

-- The whole of a document's update in one trigger: the cap of status_reason, the stamps, and
-- for a status change both edges checked (the per-edge check runs only to name the failing
-- one), the lease of an unheld job entering ocr running (every job of an in-progress document
-- has one, so the reaper covers it even when a document was moved by hand; it goes to the
-- session's login role) and the history, its one or two rows in one INSERT.
CREATE OR REPLACE FUNCTION docstatus._documents_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_text_changed boolean := NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status;
    v_processing_changed boolean := NEW.processing_status IS DISTINCT FROM OLD.processing_status;
    v_edges integer;
    v_mode text;
    v_hold_job boolean;
    v_hints text;
    v_sent bigint;
BEGIN
    IF octet_length(NEW.status_reason) > 4096 THEN
        NEW.status_reason := docstatus._cap_text(NEW.status_reason);
    END IF;
    NEW.updated_at := now();
    IF NOT (v_text_changed OR v_processing_changed) THEN
        RETURN NEW;
    END IF;

    -- One lookup: the edges that exist, the notify mode, whether a job waits for its lease.
    SELECT (SELECT count(*) FROM docstatus.status_transitions
             WHERE (kind, from_status, to_status) IN (
                       ('text_extraction', OLD.text_extraction_status, NEW.text_extraction_status),
                       ('processing', OLD.processing_status, NEW.processing_status))),
           CASE WHEN s.notify_events THEN s.notify_mode ELSE 'off' END,
           v_processing_changed AND NEW.processing_status = 'ocr running'
               AND EXISTS (SELECT FROM docstatus.extraction_jobs
                            WHERE document_id = NEW.id AND status = 'pending extraction' AND worker_id IS NULL)
      INTO v_edges, v_mode, v_hold_job
      FROM docstatus.settings s;
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

    IF v_hold_job THEN
        UPDATE docstatus.extraction_jobs
           SET worker_id = session_user,
               lease_expires_at = now() + (SELECT default_lease FROM docstatus.settings),
               started_at = coalesce(started_at, now())
         WHERE document_id = NEW.id AND status = 'pending extraction' AND worker_id IS NULL;
    END IF;

    -- The text event first, as its column comes first; a failure always sends its alert.
    v_hints := CASE v_mode WHEN 'each' THEN 'each' WHEN 'off' THEN 'none' ELSE docstatus._event_hints_due() END;
    WITH event AS (
        INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, detail)
        SELECT NEW.id, change.kind, change.from_status, change.to_status, NEW.status_reason
          FROM (VALUES ('text_extraction', OLD.text_extraction_status, NEW.text_extraction_status, v_text_changed),
                       ('processing', OLD.processing_status, NEW.processing_status, v_processing_changed))
               AS change (kind, from_status, to_status, changed)
         WHERE change.changed
        RETURNING id, kind, from_status, to_status)
    SELECT count(docstatus._send_event_hints(
                     event.id, NEW.id, NULL, event.kind, event.from_status, event.to_status, NEW.status_reason,
                     v_hints = 'each'
                     OR (v_hints = 'first' AND (event.kind = 'text_extraction' OR NOT v_text_changed))))
      INTO v_sent FROM event
     WHERE v_hints <> 'none' OR event.to_status = 'failed';
    RETURN NEW;
END;
$$;

-- A status_reason over 4096 bytes is cut by the BEFORE triggers above, which fire for every
-- insert and update of a document.
DROP TRIGGER _050_cap_status_reason ON docstatus.documents;
DROP FUNCTION docstatus._cap_status_reason();

------------------------------------------------------------------------------------------------
-- Jobs: the same
------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION docstatus._jobs_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'pending extraction' AND docstatus._is_known_status('job', NEW.status) THEN
        PERFORM docstatus._raise_invalid_transition(NEW.document_id, 'job', NULL, NEW.status, NEW.id);
    END IF;
    IF octet_length(NEW.error_message) > 4096 THEN
        NEW.error_message := docstatus._cap_text(NEW.error_message);
    END IF;
    RETURN NEW;
END;
$$;


CREATE OR REPLACE FUNCTION docstatus._jobs_record_history() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_hints text := docstatus._event_hints_due();
    v_event_id bigint;
BEGIN
    INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, detail)
    VALUES (NEW.document_id, NEW.id, 'job', NULL, NEW.status, NEW.error_message)
    RETURNING id INTO v_event_id;
    IF v_hints <> 'none' THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.document_id, NEW.id, 'job', NULL,
                                            NEW.status, NEW.error_message, true);
    END IF;
    RETURN NULL;
END;
$$;

-- A job's status change: the edge, the end stamp and the history in one trigger. It fires for
-- every update that sets status and returns at once when status did not change: cheaper than a
-- WHEN clause, which is prepared again for each statement.
CREATE OR REPLACE FUNCTION docstatus._jobs_before_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_edge boolean;
    v_mode text;
    v_hints text;
    v_event_id bigint;
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;
    SELECT EXISTS (SELECT FROM docstatus.status_transitions
                    WHERE kind = 'job' AND from_status = OLD.status AND to_status = NEW.status),
           CASE WHEN s.notify_events THEN s.notify_mode ELSE 'off' END
      INTO v_edge, v_mode
      FROM docstatus.settings s;
    IF NOT v_edge THEN
        PERFORM docstatus._require_transition(OLD.document_id, 'job', OLD.status, NEW.status, OLD.id);
    END IF;
    -- Every transition out of 'pending extraction' is terminal: callers cannot forget the stamp.
    NEW.completed_at := now();
    v_hints := CASE v_mode WHEN 'each' THEN 'each' WHEN 'off' THEN 'none' ELSE docstatus._event_hints_due() END;
    INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, detail)
    VALUES (NEW.document_id, NEW.id, 'job', OLD.status, NEW.status, NEW.error_message)
    RETURNING id INTO v_event_id;
    IF v_hints <> 'none' OR NEW.status = 'failed' THEN
        PERFORM docstatus._send_event_hints(v_event_id, NEW.document_id, NEW.id, 'job', OLD.status,
                                            NEW.status, NEW.error_message, v_hints <> 'none');
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER _100_check_transition ON docstatus.extraction_jobs;
CREATE TRIGGER _100_check_transition BEFORE UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_before_status_change();

-- Inserts are capped by _jobs_before_insert; an update that sets error_message is capped here,
-- before the history trigger (_100) sees the text. It tests the length itself: a trigger call
-- costs less than a WHEN clause, which is prepared again for every statement that sets the column.
CREATE OR REPLACE FUNCTION docstatus._cap_error_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF octet_length(NEW.error_message) > 4096 THEN
        NEW.error_message := docstatus._cap_text(NEW.error_message);
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER _050_cap_error_message ON docstatus.extraction_jobs;
CREATE TRIGGER _050_cap_error_message BEFORE UPDATE OF error_message ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._cap_error_message();

------------------------------------------------------------------------------------------------
-- The agreement of document and job: the document side only when it can matter
------------------------------------------------------------------------------------------------

-- A document that stays on one side (with an active job: ready, in progress; without: the
-- rest) keeps its jobs as they were, which agreed at the last commit; any change to them fires
-- the job side. Entering in progress also holds the job (_documents_before_update). So only a
-- move across the sides needs the check.
DROP TRIGGER _800_documents_agree_with_jobs ON docstatus.documents;
CREATE CONSTRAINT TRIGGER _800_documents_agree_with_jobs
    AFTER UPDATE OF text_extraction_status ON docstatus.documents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN ((NEW.text_extraction_status IN ('ready', 'in progress'))
                       IS DISTINCT FROM (OLD.text_extraction_status IN ('ready', 'in progress')))
    EXECUTE FUNCTION docstatus._documents_check_agreement();

------------------------------------------------------------------------------------------------
-- The API: a claim that starts OCR updates each job once
------------------------------------------------------------------------------------------------

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
    -- The jobs first: a document that then enters ocr running finds its job held, and its
    -- trigger leaves the job alone (one update per job, not two).
    UPDATE docstatus.extraction_jobs
       SET worker_id = p_worker_id, lease_expires_at = now() + p_lease, started_at = now()
     WHERE id = ANY (v_job_ids);
    IF p_start_ocr THEN
        -- As mark_ocr_running would, in the claim's transaction: one round trip fewer per job.
        UPDATE docstatus.documents
           SET text_extraction_status = 'in progress', processing_status = 'ocr running', status_reason = NULL
         WHERE id = ANY (v_document_ids);
    END IF;
    RETURN QUERY
    SELECT j.id, j.document_id, j.status, j.attempt, j.idempotency_key, j.worker_id, j.lease_expires_at,
           j.created_at, j.started_at, j.completed_at, j.error_message, j.not_before, j.released,
           d.blob_container, d.blob_name, d.filename, d.mime_type, d.size_bytes,
           d.text_extraction_status, d.processing_status, d.status_reason, d.created_at, d.updated_at,
           d.status_entered_at
      FROM docstatus.extraction_jobs j
      JOIN docstatus.documents d ON d.id = j.document_id
     WHERE j.id = ANY (v_job_ids);
END;
$$;
-- The old hint function is replaced by _event_hints_due.
DROP FUNCTION docstatus._event_hint_due();

-- The new function runs as docstatus_owner like the rest (0008), where the installer may hand
-- it over: it is a member of that role (0008 made it one, or an administrator did).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
       OR NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
        RETURN;
    END IF;
    -- A new owner needs CREATE on the schema (a superuser installer skips that check): only
    -- for the hand-over.
    GRANT CREATE ON SCHEMA docstatus TO docstatus_owner;
    ALTER FUNCTION docstatus._event_hints_due() OWNER TO docstatus_owner;
    REVOKE CREATE ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;
