-- A cheaper hot path: one trigger per status change writes its history and checks both edges
-- with one lookup; notifications that do not serialise commits (settings.notify_mode:
-- per_transaction, throttled); register_documents for bulk uploads.
-- depends: 0009_operator_dashboard

------------------------------------------------------------------------------------------------
-- Settings: how often the docstatus_events hint goes out
------------------------------------------------------------------------------------------------

ALTER TABLE docstatus.settings
    ADD COLUMN notify_mode text NOT NULL DEFAULT 'each'
        CHECK (notify_mode IN ('each', 'per_transaction', 'throttled', 'off')),
    ADD COLUMN notify_interval interval NOT NULL DEFAULT '50 milliseconds'
        CHECK (notify_interval > interval '0' AND notify_interval <= interval '1 minute');
COMMENT ON COLUMN docstatus.settings.notify_mode IS
    'When a status change sends its docstatus_events hint: each (every event), per_transaction (the '
    'first event of a transaction), throttled (at most one transaction per notify_interval, across '
    'all writers), off. notify_events = false means off whatever this says. docstatus_alerts always '
    'go out. Every committing transaction that notifies takes one database-wide lock until its '
    'commit is flushed; subscribers read events_after until caught up, so no event is missed.';
COMMENT ON COLUMN docstatus.settings.notify_interval IS
    'throttled: the shortest time between two docstatus_events hints. Subscribers read once more '
    'this long after a wake-up (twice it), for events whose transaction sent no hint.';

-- One row per throttled channel: when its last hint was sent.
CREATE TABLE docstatus.notify_throttle (
    channel      text PRIMARY KEY CHECK (channel = 'docstatus_events'),
    last_sent_at timestamptz NOT NULL DEFAULT '-infinity'
);
COMMENT ON TABLE docstatus.notify_throttle IS
    'settings.notify_mode = throttled: when each channel last sent a hint. A writer takes the row '
    'with SKIP LOCKED, so none ever waits for it.';
INSERT INTO docstatus.notify_throttle (channel) VALUES ('docstatus_events');
GRANT SELECT ON docstatus.notify_throttle TO docstatus_reader;
-- docstatus_owner's rights (default privileges, 0008) granted again after the reader's, in the
-- order a fresh install (schema.sql) grants them: pg_dump shows grantees in the order granted.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
       AND pg_has_role('docstatus_owner', 'MEMBER') THEN
        REVOKE ALL ON docstatus.notify_throttle FROM docstatus_owner;
        GRANT SELECT, INSERT, UPDATE ON docstatus.notify_throttle TO docstatus_owner;
    END IF;
END;
$$;

------------------------------------------------------------------------------------------------
-- History: one index fewer on every insert
------------------------------------------------------------------------------------------------

-- The primary key leads with document_id, so it also reads a document's history in id order,
-- and status_events_by_document, maintained on every event and read by nothing else, goes.
ALTER TABLE docstatus.status_events DROP CONSTRAINT status_events_pkey;
DROP INDEX docstatus.status_events_by_document;
ALTER TABLE docstatus.status_events ADD PRIMARY KEY (document_id, id, occurred_at);

------------------------------------------------------------------------------------------------
-- Hints and history
------------------------------------------------------------------------------------------------

-- Whether the event being written sends its hint on docstatus_events, by settings.notify_mode
-- (notify_events = false is 'off'). Every transaction that NOTIFYs takes one database-wide lock
-- from its commit until the commit is flushed, so the cheaper modes notify less: per_transaction
-- once per transaction (a transaction-local flag, reverted with a rolled-back savepoint as its
-- NOTIFY is), throttled once per notify_interval across all writers. The throttle row is taken
-- with SKIP LOCKED: a writer never waits for it, it sends nothing when another has it.
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

-- The hints of one event: docstatus_events when p_hint, docstatus_alerts for every failure.
CREATE FUNCTION docstatus._send_event_hints(
    p_event_id bigint, p_document_id bigint, p_job_id bigint, p_kind text, p_from text, p_to text,
    p_detail text, p_hint boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_hint THEN
        PERFORM pg_notify('docstatus_events', json_build_object(
            'event_id', p_event_id, 'document_id', p_document_id, 'job_id', p_job_id,
            'kind', p_kind, 'from', p_from, 'to', p_to, 'at', now())::text);
    END IF;
    IF p_to = 'failed' THEN
        -- The error is cut so the payload stays far below NOTIFY's 8000-byte limit.
        PERFORM pg_notify('docstatus_alerts', json_build_object(
            'event_id', p_event_id, 'document_id', p_document_id, 'job_id', p_job_id,
            'kind', p_kind, 'from', p_from, 'to', p_to, 'at', now(),
            'error', left(p_detail, 500))::text);
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._send_event_hints IS 'Internal: the NOTIFYs of one status_events row.';

-- One trigger per change writes its history itself (no second trigger, no queued AFTER event
-- for updates): an UPDATE's BEFORE trigger sees the row as it will be written, and a failing
-- statement rolls its history back with it. Inserts keep an AFTER trigger: INSERT ... ON
-- CONFLICT DO NOTHING runs BEFORE triggers for rows it then skips.
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

-- The whole of a document's status change in one trigger: both edges checked with one lookup
-- (the per-edge check runs only to name the failing one), the stamps, the lease of an unheld
-- job entering ocr running (every job of an in-progress document has one, so the reaper covers
-- it even when a document was moved by hand; it goes to the session's login role), the history.
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

-- A job's status change: the edge, the end stamp and the history in one trigger.
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

DROP TRIGGER _300_hold_job_on_ocr ON docstatus.documents;
DROP TRIGGER _500_history_update ON docstatus.documents;
DROP TRIGGER _500_history_update ON docstatus.extraction_jobs;
DROP FUNCTION docstatus._documents_hold_job_on_ocr();
DROP FUNCTION docstatus._record_event(bigint, bigint, text, text, text, text, boolean);

------------------------------------------------------------------------------------------------
-- Bulk uploads
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.register_documents(
    p_blob_containers text[], p_blob_names text[], p_filenames text[],
    p_mime_types text[] DEFAULT NULL, p_size_bytes bigint[] DEFAULT NULL)
RETURNS SETOF docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_count integer := cardinality(p_blob_containers);
BEGIN
    IF v_count IS NULL OR cardinality(p_blob_names) IS DISTINCT FROM v_count
       OR cardinality(p_filenames) IS DISTINCT FROM v_count
       OR (p_mime_types IS NOT NULL AND cardinality(p_mime_types) <> v_count)
       OR (p_size_bytes IS NOT NULL AND cardinality(p_size_bytes) <> v_count) THEN
        PERFORM docstatus._raise_invalid_argument(format(
            'containers, blob names and filenames (and mime types, sizes when given) must be arrays of one '
            'length, got %s, %s, %s, %s, %s', cardinality(p_blob_containers), cardinality(p_blob_names),
            cardinality(p_filenames), cardinality(p_mime_types), cardinality(p_size_bytes)));
    END IF;
    -- The same limits as register_document's (0008), the first element that breaks one named.
    PERFORM docstatus._require_text('blob container', u.c, 63), docstatus._require_text('blob name', u.b, 1024),
            docstatus._require_text('filename', u.f, 1024),
            docstatus._require_text('MIME type', nullif(btrim(p_mime_types[u.i]), ''), 255, p_nullable => true)
       FROM unnest(p_blob_containers, p_blob_names, p_filenames) WITH ORDINALITY AS u(c, b, f, i)
      ORDER BY u.i;
    IF EXISTS (SELECT FROM unnest(p_blob_names) AS b WHERE octet_length(b) > 2048) THEN
        PERFORM docstatus._raise_invalid_argument('blob name must be at most 2048 bytes');
    END IF;
    IF EXISTS (SELECT FROM unnest(p_size_bytes) AS s WHERE s < 0) THEN
        PERFORM docstatus._raise_invalid_argument('no size may be negative');
    END IF;

    -- One statement for the batch; rows already registered (or twice in it) are left as they are.
    INSERT INTO docstatus.documents (blob_container, blob_name, filename, mime_type, size_bytes)
    SELECT u.c, u.b, u.f, nullif(btrim(p_mime_types[u.i]), ''), p_size_bytes[u.i]
      FROM unnest(p_blob_containers, p_blob_names, p_filenames) WITH ORDINALITY AS u(c, b, f, i)
     ORDER BY u.i
    ON CONFLICT (blob_container, blob_name) DO NOTHING;

    RETURN QUERY
    SELECT d.* FROM unnest(p_blob_containers, p_blob_names) WITH ORDINALITY AS u(c, b, i)
      JOIN docstatus.documents d ON d.blob_container = u.c AND d.blob_name = u.b
     ORDER BY u.i;
END;
$$;
COMMENT ON FUNCTION docstatus.register_documents IS
    'register_document for many uploads in one call: element i of each array is one blob. Returns '
    'one row per element, in their order; a blob already registered returns its existing row. '
    'DS003 when the arrays differ in length, a name is empty or a size negative (nothing registered).';
REVOKE ALL ON FUNCTION docstatus._event_hint_due(),
                       docstatus._send_event_hints(bigint, bigint, bigint, text, text, text, text, boolean),
                       docstatus.register_documents(text[], text[], text[], text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docstatus.register_documents(text[], text[], text[], text[], bigint[]) TO docstatus_dms;

-- The new functions run as docstatus_owner like the rest (0008), where the installer may hand
-- them over: it is a member of that role (0008 made it one, or an administrator did).
DO $$
DECLARE
    v_function regprocedure;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
       OR NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
        RETURN;
    END IF;
    -- A new owner needs CREATE on the schema (a superuser installer skips that check): only
    -- for the hand-over.
    GRANT CREATE ON SCHEMA docstatus TO docstatus_owner;
    FOREACH v_function IN ARRAY ARRAY[
        'docstatus._event_hint_due()',
        'docstatus._send_event_hints(bigint, bigint, bigint, text, text, text, text, boolean)',
        'docstatus.register_documents(text[], text[], text[], text[], bigint[])']::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO docstatus_owner', v_function);
    END LOOP;
    REVOKE CREATE ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;
