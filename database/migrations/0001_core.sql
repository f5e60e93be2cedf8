-- The SQL core: schema docstatus, state machine, jobs, event log, NOTIFY and roles.
-- depends:

CREATE SCHEMA docstatus;
COMMENT ON SCHEMA docstatus IS 'Document text extraction and processing statuses, extraction jobs and their history.';

------------------------------------------------------------------------------------------------
-- Configuration and reference data
------------------------------------------------------------------------------------------------

CREATE TABLE docstatus.settings (
    -- One row only: the primary key can only be true.
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_attempts   integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    default_lease  interval NOT NULL DEFAULT '5 minutes' CHECK (default_lease > interval '0'),
    notify_events  boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE docstatus.settings IS
    'Configuration as data, one row. max_attempts: attempts before the reaper stops retrying; '
    'default_lease: lease given to a job that enters ocr running without a holder; '
    'notify_events: false sends only docstatus_alerts (history is written all the same).';
INSERT INTO docstatus.settings DEFAULT VALUES;

CREATE FUNCTION docstatus._refuse_settings_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'docstatus.settings keeps exactly one row: UPDATE it instead'
        USING ERRCODE = 'DS003';
END;
$$;
CREATE TRIGGER _100_keep_one_row BEFORE DELETE ON docstatus.settings
    FOR EACH ROW EXECUTE FUNCTION docstatus._refuse_settings_delete();
CREATE TRIGGER _100_keep_one_row_truncate BEFORE TRUNCATE ON docstatus.settings
    FOR EACH STATEMENT EXECUTE FUNCTION docstatus._refuse_settings_delete();

CREATE TABLE docstatus.allowed_mime_types (
    mime_type   text PRIMARY KEY CHECK (mime_type = lower(mime_type) AND mime_type LIKE '%/%'),
    description text
);
COMMENT ON TABLE docstatus.allowed_mime_types IS
    'MIME allowlist used by validate_document: a document whose detected type is not here fails validation.';
INSERT INTO docstatus.allowed_mime_types (mime_type, description) VALUES
    ('application/pdf', 'PDF'),
    ('image/png', 'PNG image'),
    ('image/jpeg', 'JPEG image'),
    ('image/tiff', 'TIFF image'),
    ('text/plain', 'Plain text');

CREATE TABLE docstatus.status_transitions (
    kind        text NOT NULL CHECK (kind IN ('text_extraction', 'processing', 'job')),
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (kind, from_status, to_status),
    CHECK (from_status <> to_status)
);
COMMENT ON TABLE docstatus.status_transitions IS
    'The allowed status graph, one row per edge. A trigger checks every status change of '
    'documents and extraction_jobs against it, raw UPDATEs included.';
INSERT INTO docstatus.status_transitions (kind, from_status, to_status) VALUES
    -- Readiness and outcome: not ready -> ready -> in progress -> completed, any -> failed.
    ('text_extraction', 'not ready',   'ready'),
    ('text_extraction', 'ready',       'in progress'),
    ('text_extraction', 'in progress', 'completed'),
    ('text_extraction', 'not ready',   'failed'),
    ('text_extraction', 'ready',       'failed'),
    ('text_extraction', 'in progress', 'failed'),
    ('text_extraction', 'completed',   'failed'),
    ('text_extraction', 'failed',      'ready'),      -- retry
    ('text_extraction', 'failed',      'not ready'),  -- validate again
    -- Pipeline stage: pending extraction -> ocr running -> llm running -> done, any -> failed.
    ('processing', 'pending extraction', 'ocr running'),
    ('processing', 'ocr running',        'llm running'),
    ('processing', 'llm running',        'done'),
    ('processing', 'pending extraction', 'failed'),
    ('processing', 'ocr running',        'failed'),
    ('processing', 'llm running',        'failed'),
    ('processing', 'done',               'failed'),
    ('processing', 'failed',             'pending extraction'),  -- retry or validate again
    -- Jobs: one run, ended once.
    ('job', 'pending extraction', 'done'),
    ('job', 'pending extraction', 'failed');

------------------------------------------------------------------------------------------------
-- Documents, jobs, history
------------------------------------------------------------------------------------------------

CREATE TABLE docstatus.documents (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    blob_container         text NOT NULL CHECK (blob_container <> ''),
    blob_name              text NOT NULL CHECK (blob_name <> ''),
    filename               text NOT NULL CHECK (filename <> ''),
    mime_type              text,
    size_bytes             bigint CHECK (size_bytes >= 0),
    text_extraction_status text NOT NULL DEFAULT 'not ready'
        CHECK (text_extraction_status IN ('not ready', 'ready', 'in progress', 'completed', 'failed')),
    processing_status      text NOT NULL DEFAULT 'pending extraction'
        CHECK (processing_status IN ('pending extraction', 'ocr running', 'llm running', 'done', 'failed')),
    status_reason          text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- Kept by the triggers so "how long in this state" needs no history search.
    status_entered_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (blob_container, blob_name),
    -- The two columns move together: these six pairs are the only states a document has.
    CONSTRAINT documents_status_pair CHECK (
        (text_extraction_status, processing_status) IN (
            ('not ready',   'pending extraction'),  -- uploaded
            ('ready',       'pending extraction'),  -- queued
            ('in progress', 'ocr running'),
            ('in progress', 'llm running'),
            ('completed',   'done'),
            ('failed',      'failed')))
);
COMMENT ON TABLE docstatus.documents IS
    'One row per stored blob. text_extraction_status says whether it may be processed and how it '
    'ended; processing_status says which pipeline stage runs now.';
COMMENT ON COLUMN docstatus.documents.status_reason IS
    'Why the document is in its current state (validation rejection, last error), if anything.';

-- Operators and the stuck views look at documents that are still moving.
CREATE INDEX documents_active_by_status ON docstatus.documents (processing_status, status_entered_at)
    WHERE text_extraction_status NOT IN ('completed', 'failed');

CREATE TABLE docstatus.extraction_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id      bigint NOT NULL REFERENCES docstatus.documents (id),
    status           text NOT NULL DEFAULT 'pending extraction'
        CHECK (status IN ('pending extraction', 'done', 'failed')),
    attempt          integer NOT NULL CHECK (attempt >= 1),
    idempotency_key  text CHECK (idempotency_key <> ''),
    worker_id        text CHECK (worker_id <> ''),
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    error_message    text,
    UNIQUE (document_id, attempt),
    -- A terminal job always has its end time, and only a terminal job has one.
    CONSTRAINT extraction_jobs_completed_at CHECK ((completed_at IS NULL) = (status = 'pending extraction')),
    CONSTRAINT extraction_jobs_failed_has_error CHECK (status <> 'failed' OR error_message IS NOT NULL),
    CONSTRAINT extraction_jobs_lease_has_holder CHECK ((worker_id IS NULL) = (lease_expires_at IS NULL))
);
COMMENT ON TABLE docstatus.extraction_jobs IS
    'One row per extraction run of a document. A job a worker holds stays pending extraction, '
    'with worker_id and lease_expires_at set; done and failed are final and carry completed_at.';

CREATE INDEX extraction_jobs_by_document ON docstatus.extraction_jobs (document_id, created_at DESC);
-- At most one active job per document.
CREATE UNIQUE INDEX extraction_jobs_one_active ON docstatus.extraction_jobs (document_id)
    WHERE status = 'pending extraction';
-- Idempotency keys are unique per document; most jobs have none, so they cost no index entry.
CREATE UNIQUE INDEX extraction_jobs_idempotency_key ON docstatus.extraction_jobs (document_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim path: unheld active jobs, oldest first.
CREATE INDEX extraction_jobs_claimable ON docstatus.extraction_jobs (created_at, id)
    WHERE status = 'pending extraction' AND worker_id IS NULL;
-- The reaper's path: held active jobs by lease end.
CREATE INDEX extraction_jobs_leased ON docstatus.extraction_jobs (lease_expires_at)
    WHERE status = 'pending extraction' AND worker_id IS NOT NULL;

CREATE TABLE docstatus.status_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: events_after orders by (tx_id, id) and only hands out events of
    -- transactions older than every running one, so a late commit is never skipped.
    tx_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- No foreign keys: they would cost a lookup per event on the hottest path. Documents and
    -- jobs cannot be deleted (see _refuse_delete), so every event keeps its document and job.
    document_id bigint NOT NULL,
    job_id      bigint,
    kind        text NOT NULL CHECK (kind IN ('text_extraction', 'processing', 'job')),
    from_status text,
    to_status   text NOT NULL,
    detail      text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'job') = (job_id IS NOT NULL))
);
COMMENT ON TABLE docstatus.status_events IS
    'Append-only history: one row per status change of a document column or a job, creation '
    'included (from_status NULL). The durable truth behind the NOTIFY hints.';

CREATE INDEX status_events_cursor ON docstatus.status_events (tx_id, id);

-- Documents and jobs stay, with their history: an operator who wants one gone marks it failed.
CREATE FUNCTION docstatus._refuse_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are kept with their history: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'DS006',
              HINT = 'Mark a document failed instead of deleting it.';
END;
$$;
CREATE TRIGGER _100_keep_rows BEFORE DELETE ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._refuse_delete();
CREATE TRIGGER _100_keep_rows_truncate BEFORE TRUNCATE ON docstatus.documents
    FOR EACH STATEMENT EXECUTE FUNCTION docstatus._refuse_delete();
CREATE TRIGGER _100_keep_rows BEFORE DELETE ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._refuse_delete();
CREATE TRIGGER _100_keep_rows_truncate BEFORE TRUNCATE ON docstatus.extraction_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION docstatus._refuse_delete();
CREATE INDEX status_events_by_document ON docstatus.status_events (document_id, id);

------------------------------------------------------------------------------------------------
-- Internal helpers (not granted to anybody)
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus._raise_invalid_transition(
    p_document_id bigint, p_kind text, p_from text, p_to text, p_job_id bigint DEFAULT NULL,
    p_hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invalid transition of document %: % % -> %',
            p_document_id,
            CASE p_kind WHEN 'job' THEN format('job %s status', coalesce(p_job_id::text, '(new)'))
                        ELSE p_kind || '_status' END,
            coalesce(quote_literal(p_from), 'NULL'), quote_literal(p_to)
        USING ERRCODE = 'DS001',
              -- Machine-readable for clients in any language.
              DETAIL = json_build_object('document_id', p_document_id, 'job_id', p_job_id, 'kind', p_kind,
                                         'column', CASE p_kind WHEN 'job' THEN 'status' ELSE p_kind || '_status' END,
                                         'from', p_from, 'to', p_to)::text,
              HINT = coalesce(p_hint, 'SELECT * FROM docstatus.status_transitions lists the allowed moves.');
END;
$$;
COMMENT ON FUNCTION docstatus._raise_invalid_transition IS 'Internal: raises DS001 with a uniform message.';

CREATE FUNCTION docstatus._is_known_status(p_kind text, p_status text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM docstatus.status_transitions
                    WHERE kind = p_kind AND p_status IN (from_status, to_status));
$$;
COMMENT ON FUNCTION docstatus._is_known_status IS 'Internal: whether any edge of the graph names this status.';

CREATE FUNCTION docstatus._require_transition(
    p_document_id bigint, p_kind text, p_from text, p_to text, p_job_id bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM docstatus.status_transitions
     WHERE kind = p_kind AND from_status = p_from AND to_status = p_to;
    IF NOT FOUND THEN
        -- An unknown status string is left to the column's CHECK (23514).
        IF NOT docstatus._is_known_status(p_kind, p_to) THEN
            RETURN;
        END IF;
        PERFORM docstatus._raise_invalid_transition(p_document_id, p_kind, p_from, p_to, p_job_id);
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._require_transition IS 'Internal: DS001 unless (kind, from, to) is a row of status_transitions.';

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

------------------------------------------------------------------------------------------------
-- Triggers: the rules, for every writer. Same-kind triggers fire in name order, hence numbers.
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus._documents_before_insert() RETURNS trigger
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

CREATE FUNCTION docstatus._documents_before_update() RETURNS trigger
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

CREATE FUNCTION docstatus._documents_record_history() RETURNS trigger
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

CREATE TRIGGER _100_check_initial_status BEFORE INSERT ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_before_insert();
CREATE TRIGGER _100_check_transition BEFORE UPDATE ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_before_update();
CREATE TRIGGER _300_hold_job_on_ocr AFTER UPDATE OF processing_status ON docstatus.documents
    FOR EACH ROW WHEN (NEW.processing_status = 'ocr running' AND OLD.processing_status <> 'ocr running')
    EXECUTE FUNCTION docstatus._documents_hold_job_on_ocr();
CREATE TRIGGER _500_history_insert AFTER INSERT ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_record_history();
CREATE TRIGGER _500_history_update AFTER UPDATE ON docstatus.documents
    FOR EACH ROW WHEN (NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status
                       OR NEW.processing_status IS DISTINCT FROM OLD.processing_status)
    EXECUTE FUNCTION docstatus._documents_record_history();

CREATE FUNCTION docstatus._jobs_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'pending extraction' AND docstatus._is_known_status('job', NEW.status) THEN
        PERFORM docstatus._raise_invalid_transition(NEW.document_id, 'job', NULL, NEW.status, NEW.id);
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION docstatus._jobs_before_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM docstatus._require_transition(OLD.document_id, 'job', OLD.status, NEW.status, OLD.id);
    -- Every transition out of 'pending extraction' is terminal: callers cannot forget the stamp.
    NEW.completed_at := now();
    RETURN NEW;
END;
$$;

CREATE FUNCTION docstatus._jobs_record_history() RETURNS trigger
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

CREATE TRIGGER _100_check_initial_status BEFORE INSERT ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_before_insert();
CREATE TRIGGER _100_check_transition BEFORE UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION docstatus._jobs_before_status_change();
CREATE TRIGGER _500_history_insert AFTER INSERT ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_record_history();
CREATE TRIGGER _500_history_update AFTER UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION docstatus._jobs_record_history();

-- Document and job agree, checked at commit so a transaction may move them in either order.
-- Deferred triggers run at COMMIT as the calling role, outside any SECURITY DEFINER function,
-- so this one is a definer itself.
CREATE FUNCTION docstatus._check_document_job_agreement(p_document_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_active_job_id bigint;
    v_holder text;
BEGIN
    SELECT d.text_extraction_status, j.id, j.worker_id
      INTO v_status, v_active_job_id, v_holder
      FROM docstatus.documents d
      LEFT JOIN docstatus.extraction_jobs j ON j.document_id = d.id AND j.status = 'pending extraction'
     WHERE d.id = p_document_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF (v_active_job_id IS NOT NULL) <> (v_status IN ('ready', 'in progress')) THEN
        RAISE EXCEPTION 'document % is %, but it has % active extraction job',
                p_document_id, quote_literal(v_status), CASE WHEN v_active_job_id IS NULL THEN 'no' ELSE 'an' END
            USING ERRCODE = 'DS005',
                  DETAIL = json_build_object('document_id', p_document_id, 'text_extraction_status', v_status,
                                             'has_active_job', v_active_job_id IS NOT NULL)::text,
                  HINT = 'A ready or in progress document has exactly one pending extraction job; '
                         'any other has none. Use the docstatus functions, which move both together.';
    END IF;
    -- An in-progress job nobody holds would never end: the reaper only ends leases.
    IF v_status = 'in progress' AND v_holder IS NULL THEN
        RAISE EXCEPTION 'document % is in progress, but nobody holds its job %', p_document_id, v_active_job_id
            USING ERRCODE = 'DS005',
                  DETAIL = json_build_object('document_id', p_document_id, 'text_extraction_status', v_status,
                                             'has_active_job', true, 'job_id', v_active_job_id)::text,
                  HINT = 'The job of an in-progress document keeps its worker and lease until it ends.';
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._check_document_job_agreement IS
    'Internal: DS005 unless the document and its active job agree (and an in-progress job has a holder).';

-- Deferred triggers run at COMMIT as the calling role, outside any SECURITY DEFINER function,
-- so these two are definers themselves.
CREATE FUNCTION docstatus._documents_check_agreement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM docstatus._check_document_job_agreement(NEW.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION docstatus._jobs_check_agreement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM docstatus._check_document_job_agreement(NEW.document_id);
    RETURN NULL;
END;
$$;

-- A new document is 'not ready' (enforced above) and has no job yet, so inserts need no check.
CREATE CONSTRAINT TRIGGER _800_documents_agree_with_jobs
    AFTER UPDATE OF text_extraction_status ON docstatus.documents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.text_extraction_status IS DISTINCT FROM OLD.text_extraction_status)
    EXECUTE FUNCTION docstatus._documents_check_agreement();
CREATE CONSTRAINT TRIGGER _800_jobs_agree_with_document
    AFTER INSERT ON docstatus.extraction_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_check_agreement();
-- A claim or a heartbeat (holder set, lease moved) cannot break the agreement: no check for them.
CREATE CONSTRAINT TRIGGER _800_jobs_agree_with_document_on_update
    AFTER UPDATE OF status, worker_id ON docstatus.extraction_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       OR (NEW.worker_id IS NULL AND OLD.worker_id IS NOT NULL))
    EXECUTE FUNCTION docstatus._jobs_check_agreement();

-- A job belongs to one document and is one attempt of it, for good: moving it would leave its
-- first document without the job the agreement above counted on.
CREATE FUNCTION docstatus._refuse_job_identity_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job %: document_id and attempt never change', OLD.id
        USING ERRCODE = 'DS003',
              DETAIL = json_build_object('job_id', OLD.id, 'document_id', OLD.document_id)::text;
END;
$$;
CREATE TRIGGER _100_keep_identity BEFORE UPDATE OF document_id, attempt ON docstatus.extraction_jobs
    FOR EACH ROW WHEN (NEW.document_id IS DISTINCT FROM OLD.document_id OR NEW.attempt IS DISTINCT FROM OLD.attempt)
    EXECUTE FUNCTION docstatus._refuse_job_identity_change();

-- History is append-only, for superusers too.
CREATE FUNCTION docstatus._refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'docstatus.status_events is append-only: % refused', TG_OP
        USING ERRCODE = 'DS006';
END;
$$;
CREATE TRIGGER _100_append_only BEFORE UPDATE OR DELETE ON docstatus.status_events
    FOR EACH ROW EXECUTE FUNCTION docstatus._refuse_history_change();
CREATE TRIGGER _100_append_only_truncate BEFORE TRUNCATE ON docstatus.status_events
    FOR EACH STATEMENT EXECUTE FUNCTION docstatus._refuse_history_change();

------------------------------------------------------------------------------------------------
-- The SQL API
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus._raise_invalid_argument(p_message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', p_message USING ERRCODE = 'DS003';
END;
$$;
COMMENT ON FUNCTION docstatus._raise_invalid_argument IS 'Internal: raises DS003.';

CREATE FUNCTION docstatus._raise_not_found(p_what text, p_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'unknown % %', p_what, p_id
        USING ERRCODE = 'DS002', DETAIL = json_build_object(p_what || '_id', p_id)::text;
END;
$$;
COMMENT ON FUNCTION docstatus._raise_not_found IS 'Internal: raises DS002.';

-- Locks and returns a document; DS002 when there is none.
CREATE FUNCTION docstatus._lock_document(p_document_id bigint) RETURNS docstatus.documents
LANGUAGE plpgsql AS $$
DECLARE
    v_document docstatus.documents;
BEGIN
    IF p_document_id IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('document id must not be null');
    END IF;
    SELECT * INTO v_document FROM docstatus.documents WHERE id = p_document_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM docstatus._raise_not_found('document', p_document_id);
    END IF;
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus._lock_document IS 'Internal: SELECT ... FOR UPDATE of one document, DS002 if missing.';

-- Inserts the next attempt of a document's extraction.
CREATE FUNCTION docstatus._insert_job(p_document_id bigint, p_idempotency_key text)
RETURNS docstatus.extraction_jobs
LANGUAGE plpgsql AS $$
DECLARE
    v_job docstatus.extraction_jobs;
BEGIN
    INSERT INTO docstatus.extraction_jobs (document_id, attempt, idempotency_key)
    VALUES (p_document_id,
            coalesce((SELECT max(attempt) FROM docstatus.extraction_jobs WHERE document_id = p_document_id), 0) + 1,
            p_idempotency_key)
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;
COMMENT ON FUNCTION docstatus._insert_job IS 'Internal: inserts attempt max+1 of a document (caller holds the document lock).';

CREATE FUNCTION docstatus.register_document(
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
COMMENT ON FUNCTION docstatus.register_document IS
    'Registers an uploaded blob as a ''not ready'' document. The same container and blob again '
    'returns the existing row. DS003 on empty names or a negative size.';

CREATE FUNCTION docstatus.validate_document(
    p_document_id bigint, p_blob_retrievable boolean, p_mime_type text)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_mime text := lower(nullif(btrim(p_mime_type), ''));
    v_had_job boolean;
    v_reason text;
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
        v_reason := 'blob not retrievable';
    ELSIF NOT EXISTS (SELECT FROM docstatus.allowed_mime_types WHERE mime_type = v_mime) THEN
        v_reason := format('MIME type %s is not allowed', v_mime);
        IF v_document.text_extraction_status = 'failed' THEN
            -- Rejected again for the same kind of reason: no round trip through 'not ready'.
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

    -- Retrievable and allowed, or not retrievable: either way the document is (back) in 'not ready'.
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
    'Promotes an uploaded document: retrievable and MIME allowed -> ''ready'' with one pending job; '
    'not retrievable -> stays ''not ready'' with status_reason (validate again later); MIME not '
    'allowed -> ''failed'' with the reason. Accepts a document that failed validation again. Any '
    'other document is returned unchanged.';

CREATE FUNCTION docstatus.create_extraction_job(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
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
COMMENT ON FUNCTION docstatus.create_extraction_job IS
    'Returns the job named by the key (any state), else the active job of a ''ready'' document '
    '(recording the key on it), creating it if missing. DS001 for a document that is not ready.';

CREATE FUNCTION docstatus.claim_extraction_job(p_worker_id text, p_lease interval DEFAULT '5 minutes')
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
             WHERE c.status = 'pending extraction' AND c.worker_id IS NULL
               AND d.text_extraction_status = 'ready'
             ORDER BY c.created_at, c.id
             LIMIT 1
               FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.*;
END;
$$;
COMMENT ON FUNCTION docstatus.claim_extraction_job IS
    'Gives the oldest unheld job of a ''ready'' document to p_worker_id with a lease; zero rows '
    'when none is free. Never the same job to two workers (FOR UPDATE SKIP LOCKED).';

CREATE FUNCTION docstatus.heartbeat_job(p_job_id bigint, p_worker_id text, p_lease interval DEFAULT '5 minutes')
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
COMMENT ON FUNCTION docstatus.heartbeat_job IS
    'Extends the lease of a job its worker holds; false when that worker does not hold it or '
    'the lease already ran out (the job is the reaper''s then). DS002 for an unknown job.';

-- Moves a document to a new pair of statuses on behalf of the holder of its active job, and
-- ends that job when p_end_job is given. The transition is checked first (DS001), the lease
-- second (DS004), so of two racing callers exactly one wins and the other gets DS001.
CREATE FUNCTION docstatus._advance_document(
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
COMMENT ON FUNCTION docstatus._advance_document IS 'Internal: shared body of the mark_* functions.';

CREATE FUNCTION docstatus.mark_ocr_running(p_document_id bigint, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN docstatus._advance_document(p_document_id, p_worker_id, 'in progress', 'ocr running', NULL, NULL, NULL);
END;
$$;
COMMENT ON FUNCTION docstatus.mark_ocr_running IS
    'Queued document -> (''in progress'', ''ocr running''). With p_worker_id, only while that worker '
    'holds the active job with an unexpired lease (else DS004); without, an unheld job is given to '
    'session_user with settings.default_lease.';

CREATE FUNCTION docstatus.mark_llm_running(p_document_id bigint, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN docstatus._advance_document(p_document_id, p_worker_id, 'in progress', 'llm running', NULL, NULL, NULL);
END;
$$;
COMMENT ON FUNCTION docstatus.mark_llm_running IS
    '''ocr running'' -> ''llm running''. Lease rules as mark_ocr_running (DS004).';

CREATE FUNCTION docstatus.mark_processing_done(p_document_id bigint, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN docstatus._advance_document(p_document_id, p_worker_id, 'completed', 'done', NULL, 'done', NULL);
END;
$$;
COMMENT ON FUNCTION docstatus.mark_processing_done IS
    '''llm running'' -> (''completed'', ''done''), and the active job -> ''done'' with completed_at. '
    'Lease rules as mark_ocr_running (DS004).';

CREATE FUNCTION docstatus.mark_processing_failed(
    p_document_id bigint, p_error_message text, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(btrim(p_error_message), '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('a failure needs an error message');
    END IF;
    RETURN docstatus._advance_document(p_document_id, p_worker_id, 'failed', 'failed',
                                       p_error_message, 'failed', p_error_message);
END;
$$;
COMMENT ON FUNCTION docstatus.mark_processing_failed IS
    'Any document -> (''failed'', ''failed'') with the error as status_reason; its active job '
    'fails with the same error_message. Lease rules as mark_ocr_running (DS004).';

CREATE FUNCTION docstatus.retry_document(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
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
COMMENT ON FUNCTION docstatus.retry_document IS
    'Operator retry of a document that failed during processing: back to ''ready'' with a new job, '
    'attempt + 1, whatever max_attempts says. A key that already names a job returns that job. '
    'DS001 for a document that failed validation (validate it again) or did not fail.';

CREATE FUNCTION docstatus.reap_expired_jobs()
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_max_attempts integer := (SELECT max_attempts FROM docstatus.settings);
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
        IF v_job.attempt < v_max_attempts THEN
            UPDATE docstatus.documents
               SET text_extraction_status = 'ready', processing_status = 'pending extraction', status_reason = NULL
             WHERE id = v_job.document_id;
            PERFORM docstatus._insert_job(v_job.document_id, NULL);
        END IF;
        RETURN NEXT v_job;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.reap_expired_jobs IS
    'Ends every job whose lease ran out: the job and its document fail with an error naming the '
    'worker; while attempt < settings.max_attempts the document goes back to ''ready'' with a new '
    'attempt. Returns the jobs it ended.';

CREATE FUNCTION docstatus.events_after(
    p_after_tx xid8 DEFAULT '0', p_after_id bigint DEFAULT 0, p_limit integer DEFAULT 1000)
RETURNS SETOF docstatus.status_events
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_after_tx IS NULL OR p_after_id IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        PERFORM docstatus._raise_invalid_argument(
            format('cursor must be non-null and limit positive, got (%s, %s) limit %s', p_after_tx, p_after_id, p_limit));
    END IF;
    -- Ids are taken before commit, so "id > last seen" would skip an event whose transaction
    -- commits late. Events of transactions older than every running one are final: hand out
    -- only those, in (tx_id, id) order, and the cursor never passes an event still to come.
    RETURN QUERY
    SELECT * FROM docstatus.status_events
     WHERE (tx_id, id) > (p_after_tx, p_after_id)
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY tx_id, id
     LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION docstatus.events_after IS
    'Catch-up read for subscribers: committed events after the cursor (p_after_tx, p_after_id), '
    'in (tx_id, id) order, only from transactions older than every running one. The next cursor '
    'is the (tx_id, id) of the last row. A long-open writing transaction delays, never loses.';

CREATE FUNCTION docstatus.event_delivery_delay(
    OUT pending_events bigint, OUT oldest_writer_pid integer, OUT oldest_writer_state text,
    OUT held_for interval)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT count(*) FROM docstatus.status_events
             WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())),
           a.pid, a.state, now() - a.xact_start
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
            SELECT pid, state, xact_start FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
             ORDER BY age(backend_xid) DESC LIMIT 1) a ON true;
$$;
COMMENT ON FUNCTION docstatus.event_delivery_delay IS
    'How far events_after is held back: events written but not yet handed out, and the oldest '
    'transaction with a transaction id (it holds delivery back until it ends).';

CREATE VIEW docstatus.event_delivery AS SELECT * FROM docstatus.event_delivery_delay();
COMMENT ON VIEW docstatus.event_delivery IS
    'One row: pending_events not yet deliverable by events_after and the oldest open writing transaction holding them.';

------------------------------------------------------------------------------------------------
-- Roles: least privilege. Roles are cluster-wide, so they are created only when missing.
------------------------------------------------------------------------------------------------

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['docstatus_reader', 'docstatus_dms', 'docstatus_worker'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
    -- The dms and worker roles have the reader's rights.
    IF NOT pg_has_role('docstatus_dms', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_dms;
    END IF;
    IF NOT pg_has_role('docstatus_worker', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_worker;
    END IF;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docstatus FROM PUBLIC;
GRANT USAGE ON SCHEMA docstatus TO docstatus_reader, docstatus_dms, docstatus_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA docstatus TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.events_after(xid8, bigint, integer),
                          docstatus.event_delivery_delay() TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.register_document(text, text, text, text, bigint),
                          docstatus.validate_document(bigint, boolean, text),
                          docstatus.create_extraction_job(bigint, text) TO docstatus_dms;
GRANT EXECUTE ON FUNCTION docstatus.create_extraction_job(bigint, text),
                          docstatus.claim_extraction_job(text, interval),
                          docstatus.heartbeat_job(bigint, text, interval),
                          docstatus.mark_ocr_running(bigint, text),
                          docstatus.mark_llm_running(bigint, text),
                          docstatus.mark_processing_done(bigint, text),
                          docstatus.mark_processing_failed(bigint, text, text),
                          docstatus.retry_document(bigint, text),
                          docstatus.reap_expired_jobs() TO docstatus_worker;
