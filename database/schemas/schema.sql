-- docstatus: the whole schema of a fresh install, read top to bottom by concept: the states of
-- a document, reference data, tables, internal helpers, triggers, the API by caller (the DMS,
-- workers, operators), views, maintenance, and the grants of each role.
--
-- Every status rule lives here, so psql, Go, Node and the Python client all get the same
-- guarantees. Tables are readable by the application roles; only the SECURITY DEFINER
-- functions below write to them.
--
-- The six states of a document (document_states): each is a pair of column values
-- (text_extraction_status, processing_status), and each column moves only along the edges of
-- status_transitions.
--
--   uploaded     (not ready,   pending extraction)  register_document
--       |  validate_document: retrievable and accepted
--       v
--   queued       (ready,       pending extraction)  with one pending extraction job
--       |  mark_ocr_running, or claim_jobs(p_start_ocr => true)
--       v
--   ocr running  (in progress, ocr running)         the job held by a worker, with a lease
--       |  mark_llm_running
--       v
--   llm running  (in progress, llm running)
--       |  finish_job (record_result, then mark_processing_done)
--       v
--   completed    (completed,   done)                final
--
--   failed       (failed,      failed)              final; entered from any state above:
--       validate_document rejects it, mark_processing_failed, mark_attempt_failed, release_job,
--       or reap_expired_jobs (the lease ran out). Edges out of failed:
--       -> queued    retry_document; or at once, with the next attempt, by mark_attempt_failed,
--                    release_job and the reaper while attempts remain (settings.max_attempts)
--       -> uploaded  validate_document again, for a document that failed validation
--
-- A job (extraction_jobs.status) is one attempt: pending extraction, then done or failed, once.
--
-- Error codes raised here (the README has the same table):
--   DS001 invalid transition          DS002 unknown document or job
--   DS003 invalid argument            DS004 lease not held
--   DS005 document and job disagree   DS006 history is append-only
--   DS007 cursor older than the retained history
--   23514 unknown status string (CHECK)

CREATE SCHEMA docstatus;
COMMENT ON SCHEMA docstatus IS 'Document text extraction and processing statuses, extraction jobs and their history.';

------------------------------------------------------------------------------------------------
-- Reference data: configuration, the MIME allowlist, the status graph, the states, their SLAs
------------------------------------------------------------------------------------------------

CREATE TABLE docstatus.settings (
    -- One row only: the primary key can only be true.
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_attempts   integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    default_lease  interval NOT NULL DEFAULT '5 minutes' CHECK (default_lease > interval '0'),
    notify_events  boolean NOT NULL DEFAULT true,
    -- 100 MiB. validate_document fails a larger document, and an empty one.
    max_document_bytes bigint NOT NULL DEFAULT 104857600 CHECK (max_document_bytes > 0),
    -- Retries wait: retry_base_delay before the second attempt, doubling, at most retry_max_delay.
    retry_base_delay interval NOT NULL DEFAULT '10 seconds' CHECK (retry_base_delay >= interval '0'),
    retry_max_delay  interval NOT NULL DEFAULT '10 minutes',
    CONSTRAINT settings_retry_delays CHECK (retry_max_delay >= retry_base_delay),
    -- status_events: partitions of one period, dropped whole after the retention (NULL: kept).
    history_retention interval DEFAULT '90 days' CHECK (history_retention > interval '0'),
    history_partition_interval interval NOT NULL DEFAULT '1 day'
        CHECK (history_partition_interval IN (interval '1 day', interval '7 days')),
    notify_mode text NOT NULL DEFAULT 'each'
        CHECK (notify_mode IN ('each', 'per_transaction', 'throttled', 'off')),
    notify_interval interval NOT NULL DEFAULT '50 milliseconds'
        CHECK (notify_interval > interval '0' AND notify_interval <= interval '1 minute')
);
COMMENT ON TABLE docstatus.settings IS
    'Configuration as data, one row. max_attempts: attempts before the reaper stops retrying; '
    'default_lease: lease given to a job that enters ocr running without a holder; '
    'notify_events: false sends only docstatus_alerts (history is written all the same); '
    'max_document_bytes: validate_document fails a larger document.';
COMMENT ON COLUMN docstatus.settings.retry_base_delay IS
    'How long the second attempt of a document waits after the first one failed (lease expired, or '
    'mark_attempt_failed); every further failure doubles the wait, up to retry_max_delay. 0: retry at once.';
COMMENT ON COLUMN docstatus.settings.retry_max_delay IS 'The longest wait between two attempts.';
COMMENT ON COLUMN docstatus.settings.history_retention IS
    'How long status_events are kept: maintain_history drops the partitions whose every event is '
    'older. NULL keeps everything. Documents and jobs are never dropped.';
COMMENT ON COLUMN docstatus.settings.history_partition_interval IS
    'The time range of one status_events partition: 1 day or 7 days (ISO weeks, as pg_partman''s '
    '''weekly''). A change applies to partitions created from then on.';
COMMENT ON COLUMN docstatus.settings.notify_mode IS
    'When a status change sends its docstatus_events hint: each (every event), per_transaction (the '
    'first event of a transaction), throttled (at most one transaction per notify_interval, across '
    'all writers), off. notify_events = false means off whatever this says. docstatus_alerts always '
    'go out. Every committing transaction that notifies takes one database-wide lock until its '
    'commit is flushed; subscribers read events_after until caught up, so no event is missed.';
COMMENT ON COLUMN docstatus.settings.notify_interval IS
    'throttled: the shortest time between two docstatus_events hints. Subscribers read once more '
    'this long after a wake-up (twice it), for events whose transaction sent no hint.';
INSERT INTO docstatus.settings DEFAULT VALUES;

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

-- documents_status_pair and stage_slas_state keep literal lists: a CHECK must be immutable, and
-- one that read this table would let a pg_dump restore check rows before the table is filled.
-- A test proves the lists and this table name the same pairs.

-- The four states a document should leave on its own, each under one name.
CREATE TABLE docstatus.stage_slas (
    state                  text PRIMARY KEY,
    text_extraction_status text NOT NULL,
    processing_status      text NOT NULL,
    max_duration           interval NOT NULL CHECK (max_duration > interval '0'),
    -- The non-final rows of document_states; completed and failed have no SLA.
    CONSTRAINT stage_slas_state CHECK (
        (state, text_extraction_status, processing_status) IN (
            ('uploaded',    'not ready',   'pending extraction'),
            ('queued',      'ready',       'pending extraction'),
            ('ocr running', 'in progress', 'ocr running'),
            ('llm running', 'in progress', 'llm running')))
);
COMMENT ON TABLE docstatus.stage_slas IS
    'How long a document may stay in each non-final state (uploaded, queued, ocr running, llm '
    'running) before stuck_documents lists it and check_stuck alerts. Editable as data: UPDATE '
    'max_duration; delete a row to stop watching that state.';
INSERT INTO docstatus.stage_slas (state, text_extraction_status, processing_status, max_duration) VALUES
    ('uploaded',    'not ready',   'pending extraction', '10 minutes'),
    ('queued',      'ready',       'pending extraction', '1 hour'),
    ('ocr running', 'in progress', 'ocr running',        '15 minutes'),
    ('llm running', 'in progress', 'llm running',        '30 minutes');
-- Autovacuum never analyzes a table this small; the stuck_documents plan wants real row counts.
ANALYZE docstatus.stage_slas;

------------------------------------------------------------------------------------------------
-- Tables: documents, jobs, history, results, counters, alerts
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
    -- The two columns move together: these six pairs (document_states) are the only states.
    -- Text limits (as _require_text): the Azure ones for the blob; the blob name also in bytes,
    -- since (container, blob name) is a unique btree key whose entries must stay under ~2.7 KB.
    CONSTRAINT documents_blob_container_text CHECK (char_length(blob_container) <= 63 AND blob_container ~ '\S'),
    CONSTRAINT documents_blob_name_text
        CHECK (char_length(blob_name) <= 1024 AND octet_length(blob_name) <= 2048 AND blob_name ~ '\S'),
    CONSTRAINT documents_filename_text CHECK (char_length(filename) <= 1024 AND filename ~ '\S'),
    CONSTRAINT documents_mime_type_text CHECK (char_length(mime_type) <= 255),
    -- Capped to 4096 bytes by the documents' BEFORE triggers, whoever writes it.
    CONSTRAINT documents_status_reason_capped CHECK (octet_length(status_reason) <= 4096),
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

-- The document list filtered to failed documents, newest first: failed documents are few and
-- spread over the whole table, so without this a page read every document (141 ms at a million
-- in bench/dashboard.py). Status updates are not HOT anyway (documents_active_by_status covers
-- the status columns), so a writer pays only when a document enters failed.
CREATE INDEX documents_failed ON docstatus.documents (id) WHERE text_extraction_status = 'failed';

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
    -- When the job may be claimed: its creation, or later for a retry that waits.
    not_before       timestamptz NOT NULL DEFAULT now(),
    released         boolean NOT NULL DEFAULT false,
    UNIQUE (document_id, attempt),
    -- A terminal job always has its end time, and only a terminal job has one.
    CONSTRAINT extraction_jobs_completed_at CHECK ((completed_at IS NULL) = (status = 'pending extraction')),
    CONSTRAINT extraction_jobs_failed_has_error CHECK (status <> 'failed' OR error_message IS NOT NULL),
    CONSTRAINT extraction_jobs_lease_has_holder CHECK ((worker_id IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT extraction_jobs_released_failed CHECK (NOT released OR status = 'failed'),
    CONSTRAINT extraction_jobs_idempotency_key_text CHECK (char_length(idempotency_key) <= 200 AND idempotency_key ~ '\S'),
    CONSTRAINT extraction_jobs_worker_id_text CHECK (char_length(worker_id) <= 200 AND worker_id ~ '\S'),
    -- Capped to 4096 bytes by _jobs_before_insert and _050_cap_error_message, whoever writes it.
    CONSTRAINT extraction_jobs_error_message_capped CHECK (octet_length(error_message) <= 4096)
);
COMMENT ON TABLE docstatus.extraction_jobs IS
    'One row per extraction run of a document. A job a worker holds stays pending extraction, '
    'with worker_id and lease_expires_at set; done and failed are final and carry completed_at.';
COMMENT ON COLUMN docstatus.extraction_jobs.not_before IS
    'claim_extraction_job hands the job out from this time on: its creation for a first attempt, '
    'later for a retry that waits (settings.retry_base_delay).';
COMMENT ON COLUMN docstatus.extraction_jobs.released IS
    'The worker gave this attempt back unfinished (release_job, on shutdown). It failed, but it '
    'does not count against settings.max_attempts.';

CREATE INDEX extraction_jobs_by_document ON docstatus.extraction_jobs (document_id, created_at DESC);
-- At most one active job per document.
CREATE UNIQUE INDEX extraction_jobs_one_active ON docstatus.extraction_jobs (document_id)
    WHERE status = 'pending extraction';
-- Idempotency keys are unique per document; most jobs have none, so they cost no index entry.
CREATE UNIQUE INDEX extraction_jobs_idempotency_key ON docstatus.extraction_jobs (document_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim path: unheld active jobs by the time they may run.
CREATE INDEX extraction_jobs_claimable ON docstatus.extraction_jobs (not_before, id)
    WHERE status = 'pending extraction' AND worker_id IS NULL;
-- The reaper's path: held active jobs by lease end.
CREATE INDEX extraction_jobs_leased ON docstatus.extraction_jobs (lease_expires_at)
    WHERE status = 'pending extraction' AND worker_id IS NOT NULL;

-- failure_summary reads failed jobs only; without this index it scanned every job (164 ms at a
-- million documents in bench/soak.py).
CREATE INDEX extraction_jobs_failed ON docstatus.extraction_jobs (completed_at) WHERE status = 'failed';

CREATE TABLE docstatus.status_events (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction: events_after orders by (tx_id, id) and only hands out events of
    -- transactions older than every running one, so a late commit is never skipped.
    tx_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- No foreign keys: they would cost a lookup per event on the hottest path. Documents and
    -- jobs cannot be deleted (see _refuse_delete), so every event keeps its document and job.
    document_id bigint NOT NULL,
    job_id      bigint,
    kind        text NOT NULL CONSTRAINT status_events_kind_check CHECK (kind IN ('text_extraction', 'processing', 'job')),
    from_status text,
    to_status   text NOT NULL,
    detail      text,
    -- The partition key: retention drops whole periods.
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- Leads with document_id: it also reads a document's history in id order (no second index).
    PRIMARY KEY (document_id, id, occurred_at),
    CONSTRAINT status_events_check CHECK ((kind = 'job') = (job_id IS NOT NULL))
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE docstatus.status_events IS
    'Append-only history: one row per status change of a document column or a job, creation '
    'included (from_status NULL). The durable truth behind the NOTIFY hints. Partitioned by '
    'occurred_at; maintain_history creates the partitions and drops those older than '
    'settings.history_retention.';

-- Events of a time no partition covers yet wait here until maintain_history moves them.
CREATE TABLE docstatus.status_events_default PARTITION OF docstatus.status_events DEFAULT;

-- Where the retained history starts, as an events_after cursor.
CREATE TABLE docstatus.history_horizon (
    -- One row only: the primary key can only be true.
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    dropped_through_tx xid8 NOT NULL DEFAULT '0',
    dropped_through_id bigint NOT NULL DEFAULT 0,
    dropped_at         timestamptz
);
COMMENT ON TABLE docstatus.history_horizon IS
    'One row: the highest (tx_id, id) cursor of any event maintain_history has dropped, and when. '
    'events_after raises DS007 for a cursor below it; from this cursor on nothing is missing.';
INSERT INTO docstatus.history_horizon DEFAULT VALUES;

CREATE INDEX status_events_cursor ON docstatus.status_events (tx_id, id);

-- BRIN: a few bytes per 128 pages, and an insert touches the summary of the last range only
-- (events arrive in time order), so writers pay next to nothing for it.
CREATE INDEX status_events_by_time ON docstatus.status_events USING brin (occurred_at);

CREATE TABLE docstatus.document_results (
    -- No foreign keys, as in status_events: documents and jobs are never deleted (_refuse_delete),
    -- and a key here would make TRUNCATE of the jobs fail before that trigger could say why.
    job_id         bigint PRIMARY KEY,
    document_id    bigint NOT NULL,
    blob_container text NOT NULL CHECK (blob_container <> ''),
    text_blob      text NOT NULL CHECK (text_blob <> ''),
    fields_blob    text NOT NULL CHECK (fields_blob <> ''),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT document_results_blobs_text CHECK (char_length(text_blob) <= 1024 AND char_length(fields_blob) <= 1024)
);
COMMENT ON TABLE docstatus.document_results IS
    'Where the result of an extraction run is stored: the extracted text and the fields (JSON) as '
    'two blobs in the document''s container, one row per job. A document''s result is that of its '
    'latest done job; a row of a job that did not end done is a leftover of an interrupted run.';

CREATE INDEX document_results_by_document ON docstatus.document_results (document_id, job_id DESC);

-- Status counts without a sequential scan and without a write in the lifecycle.
--
-- status_events already holds one append-only row per status change, creation included, so it
-- is a log of counter deltas: count(status) = rows entering it - rows leaving it. A per-change
-- counter UPDATE in the triggers would add a write to every status change and make lifecycle
-- transactions lock shared rows until commit: writers would queue on them, and two transactions
-- that change a job and a document in opposite orders would deadlock (sharding the rows only
-- makes that rarer). Instead the log is folded into these counters now and then, and
-- status_counts adds the few events written since.
CREATE TABLE docstatus.status_counters (
    kind   text NOT NULL CHECK (kind IN ('text_extraction', 'processing', 'job')),
    status text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (kind, status)
);
COMMENT ON TABLE docstatus.status_counters IS
    'Documents per text_extraction_status and processing_status, jobs per status, as of the events '
    'of every transaction below status_counters_fold.folded_below_tx. Read status_counts instead: '
    'it adds the events not folded yet.';
INSERT INTO docstatus.status_counters (kind, status, count)
SELECT DISTINCT t.kind, s.status, 0
  FROM docstatus.status_transitions t, unnest(ARRAY[t.from_status, t.to_status]) AS s (status);

CREATE TABLE docstatus.status_counters_fold (
    -- One row only: the primary key can only be true.
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    folded_below_tx xid8 NOT NULL DEFAULT '0',
    folded_at       timestamptz
);
COMMENT ON TABLE docstatus.status_counters_fold IS
    'One row: status_counters include the events of every transaction with tx_id < folded_below_tx; '
    'folded_at is when fold_status_counters last ran. Monitor both: when nobody folds, or an open '
    'writing transaction holds folding back, status_counts slows down (it never goes wrong).';
INSERT INTO docstatus.status_counters_fold DEFAULT VALUES;

-- One row per throttled channel: when its last hint was sent.
CREATE TABLE docstatus.notify_throttle (
    channel      text PRIMARY KEY CHECK (channel = 'docstatus_events'),
    last_sent_at timestamptz NOT NULL DEFAULT '-infinity'
);
COMMENT ON TABLE docstatus.notify_throttle IS
    'settings.notify_mode = throttled: when each channel last sent a hint. A writer takes the row '
    'with SKIP LOCKED, so none ever waits for it.';
INSERT INTO docstatus.notify_throttle (channel) VALUES ('docstatus_events');
CREATE TABLE docstatus.stuck_alerts (
    document_id       bigint NOT NULL REFERENCES docstatus.documents (id),
    -- A document's stay in one state is named by the time it entered it.
    status_entered_at timestamptz NOT NULL,
    state             text NOT NULL,
    sla               interval NOT NULL,
    alerted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, status_entered_at)
);
COMMENT ON TABLE docstatus.stuck_alerts IS
    'One row per stuck stay check_stuck alerted on, so it alerts once: a document that moves on '
    'enters its next state at a new status_entered_at and alerts again if that one lasts too long.';

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

-- Queues the next attempt of a document whose active job has just failed; the caller holds the
-- document lock and has just moved the document to failed. With p_backoff (a failure), only
-- while the attempts that count are fewer than settings.max_attempts, and not before
-- retry_base_delay * 2^(failures - 1), capped at retry_max_delay (_retry_delay); without it (a release), at
-- once and whatever max_attempts says. Returns the new job's id, NULL when none was queued.
CREATE FUNCTION docstatus._queue_next_attempt(p_document_id bigint, p_backoff boolean)
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
COMMENT ON FUNCTION docstatus._queue_next_attempt IS
    'Internal: back to ready with the next attempt after a failure (with backoff, while attempts '
    'remain) or a release (at once).';

-- Raises DS004 unless the caller may act on the document's active job: with p_worker_id, that
-- worker must hold it; whoever holds it, the lease must not have run out; with p_must_be_held,
-- somebody must hold it even when no worker id is given.
CREATE FUNCTION docstatus._require_lease(
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
COMMENT ON FUNCTION docstatus._require_lease IS
    'Internal: the one lease check (DS004) of the mark_* functions, release_job and record_result.';

-- The arguments every claim checks (DS003).
CREATE FUNCTION docstatus._check_claim_arguments(p_worker_id text, p_lease interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM docstatus._require_text('worker id', p_worker_id, 200);
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
    PERFORM docstatus._require_lease(p_document_id, p_worker_id, v_job_id, v_holder, v_lease_expires_at);
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus._advance_document IS 'Internal: shared body of the mark_* functions.';

-- The partitions of status_events.
--
-- Periods start at midnight UTC, or on Monday for 7 days, and are named as pg_partman 4 names
-- its 'daily' and 'weekly' partitions (maintain_history runs in UTC), so either one can take
-- over the partitions of the other.
CREATE FUNCTION docstatus._history_period_start(p_at timestamptz, p_interval interval) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE p_interval WHEN interval '7 days' THEN date_trunc('week', p_at, 'UTC')
                           ELSE date_trunc('day', p_at, 'UTC') END;
END;
COMMENT ON FUNCTION docstatus._history_period_start IS 'Internal: start of the status_events partition period holding p_at.';

CREATE FUNCTION docstatus._history_partition_name(p_period_start timestamptz, p_interval interval) RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ('status_events_p' || to_char(p_period_start AT TIME ZONE 'UTC',
            CASE p_interval WHEN interval '7 days' THEN 'IYYY"w"IW' ELSE 'YYYY_MM_DD' END))::name;
END;
COMMENT ON FUNCTION docstatus._history_partition_name IS 'Internal: the name of the partition of the period starting at p_period_start.';

-- A string body: resolved when called, since it names status_events.
CREATE FUNCTION docstatus._history_partitions(
    OUT partition regclass, OUT lower_bound timestamptz, OUT upper_bound timestamptz, OUT is_default boolean)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass,
           (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz,
           b.bound = 'DEFAULT'
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
     CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b (bound)
     WHERE i.inhparent = 'docstatus.status_events'::regclass;
$$;
COMMENT ON FUNCTION docstatus._history_partitions IS
    'Internal: the partitions of status_events with their bounds (lower NULL: from the beginning).';

CREATE FUNCTION docstatus._protect_history_partition(p_partition regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Row triggers of status_events reach every partition; statement triggers do not, and
    -- without this one TRUNCATE of a partition would empty it.
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = p_partition AND tgname = '_100_append_only_truncate') THEN
        EXECUTE format('CREATE TRIGGER _100_append_only_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION docstatus._refuse_history_change()', p_partition);
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._protect_history_partition IS 'Internal: the append-only TRUNCATE trigger on one partition.';

CREATE FUNCTION docstatus._create_history_partition(p_from timestamptz, p_to timestamptz, p_name name)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_partition regclass;
BEGIN
    -- CREATE TABLE ... PARTITION OF would lock status_events against every writer; a table of
    -- its own, then ATTACH (SHARE UPDATE EXCLUSIVE) lets the lifecycle go on meanwhile.
    EXECUTE format('CREATE TABLE docstatus.%I (LIKE docstatus.status_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   p_name);
    v_partition := format('docstatus.%I', p_name)::regclass;
    -- Events written while no partition covered their time wait in the default partition. They
    -- move here with its triggers off: they are neither new nor deleted.
    IF EXISTS (SELECT FROM docstatus.status_events_default WHERE occurred_at >= p_from AND occurred_at < p_to) THEN
        EXECUTE format('INSERT INTO %s SELECT * FROM docstatus.status_events_default '
                       'WHERE occurred_at >= $1 AND occurred_at < $2', v_partition) USING p_from, p_to;
        ALTER TABLE docstatus.status_events_default DISABLE TRIGGER USER;
        DELETE FROM docstatus.status_events_default WHERE occurred_at >= p_from AND occurred_at < p_to;
        ALTER TABLE docstatus.status_events_default ENABLE TRIGGER USER;
    END IF;
    EXECUTE format('ALTER TABLE docstatus.status_events ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                   v_partition, p_from, p_to);
    PERFORM docstatus._protect_history_partition(v_partition);
END;
$$;
COMMENT ON FUNCTION docstatus._create_history_partition IS
    'Internal: creates and attaches the partition [p_from, p_to), moving in the events of that '
    'time the default partition holds.';

-- Built-in upkeep: the partitions of the current period and four ahead (as pg_partman's
-- premake), and of any period whose events wait in the default partition (none normally). A
-- period that overlaps an existing partition (the interval was changed) starts where that ends.
CREATE FUNCTION docstatus._create_history_partitions(p_interval interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_period timestamptz;
    v_from timestamptz;
    v_created integer := 0;
    v_periods timestamptz[];
BEGIN
    -- Collected first: moving events out of the default partition alters it, which an open
    -- loop over its rows would forbid.
    SELECT array_agg(period ORDER BY period) INTO v_periods
      FROM (SELECT docstatus._history_period_start(now(), p_interval) + p_interval * ahead
              FROM generate_series(0, 4) AS ahead
            UNION
            SELECT docstatus._history_period_start(occurred_at, p_interval)
              FROM docstatus.status_events_default) AS periods (period);
    FOREACH v_period IN ARRAY v_periods LOOP
        SELECT greatest(v_period, max(upper_bound)) INTO v_from
          FROM docstatus._history_partitions()
         WHERE upper_bound > v_period AND upper_bound < v_period + p_interval;
        v_from := coalesce(v_from, v_period);
        IF NOT EXISTS (SELECT FROM docstatus._history_partitions()
                        WHERE NOT is_default AND coalesce(lower_bound, '-infinity') < v_period + p_interval
                          AND upper_bound > v_from) THEN
            BEGIN
                PERFORM docstatus._create_history_partition(v_from, v_period + p_interval,
                                                            docstatus._history_partition_name(v_period, p_interval));
                v_created := v_created + 1;
            EXCEPTION WHEN lock_not_available OR check_violation THEN
                -- Busy (lock_timeout), or an event of that period arrived in the default
                -- partition meanwhile: the next run creates it.
                RAISE WARNING 'maintain_history: partition for % not created yet: %', v_period, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION docstatus._create_history_partitions IS
    'Internal: built-in partition upkeep of status_events; returns how many partitions it created.';

------------------------------------------------------------------------------------------------
-- Triggers: the rules, for every writer. Same-kind triggers fire in name order, hence numbers.
------------------------------------------------------------------------------------------------

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
    IF octet_length(NEW.status_reason) > 4096 THEN
        NEW.status_reason := docstatus._cap_text(NEW.status_reason);
    END IF;
    NEW.status_entered_at := now();
    RETURN NEW;
END;
$$;

-- PostgreSQL 15 prepares the CHECK constraints and trigger WHEN clauses of a table again for
-- each statement that writes it, and each statement run inside a function pays an executor
-- start; so these triggers write a change's history rows in one INSERT, read what they need with
-- one lookup, decide the hints once per call, cap the long texts themselves, and test in their
-- function what a WHEN clause would test.
--
-- One trigger per change writes its history itself (no second trigger, no queued AFTER event
-- for updates): an UPDATE's BEFORE trigger sees the row as it will be written, and a failing
-- statement rolls its history back with it. Inserts keep an AFTER trigger: INSERT ... ON
-- CONFLICT DO NOTHING runs BEFORE triggers for rows it then skips.
CREATE FUNCTION docstatus._documents_record_history() RETURNS trigger
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
CREATE FUNCTION docstatus._documents_before_update() RETURNS trigger
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

CREATE TRIGGER _100_check_initial_status BEFORE INSERT ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_before_insert();
CREATE TRIGGER _100_check_transition BEFORE UPDATE ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_before_update();
CREATE TRIGGER _500_history_insert AFTER INSERT ON docstatus.documents
    FOR EACH ROW EXECUTE FUNCTION docstatus._documents_record_history();

CREATE FUNCTION docstatus._jobs_before_insert() RETURNS trigger
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

CREATE FUNCTION docstatus._jobs_record_history() RETURNS trigger
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
CREATE FUNCTION docstatus._jobs_before_status_change() RETURNS trigger
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

CREATE TRIGGER _100_check_initial_status BEFORE INSERT ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_before_insert();
CREATE TRIGGER _100_check_transition BEFORE UPDATE OF status ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_before_status_change();
CREATE TRIGGER _500_history_insert AFTER INSERT ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._jobs_record_history();
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
-- A document that stays on one side (with an active job: ready, in progress; without: the
-- rest) keeps its jobs as they were, which agreed at the last commit; any change to them fires
-- the job side. Entering in progress also holds the job (_documents_before_update). So only a
-- move across the sides needs the check.
CREATE CONSTRAINT TRIGGER _800_documents_agree_with_jobs
    AFTER UPDATE OF text_extraction_status ON docstatus.documents
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN ((NEW.text_extraction_status IN ('ready', 'in progress'))
                       IS DISTINCT FROM (OLD.text_extraction_status IN ('ready', 'in progress')))
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

-- error_message and status_reason keep their first 4096 bytes and say how much was cut,
-- whoever writes them (_cap_text): status_reason in the documents' BEFORE triggers, which fire
-- for every insert and update; error_message in _jobs_before_insert and here, for an update that
-- sets it. The trigger tests the length itself: a call costs less than a WHEN clause, which is
-- prepared again for every statement that sets the column.
CREATE FUNCTION docstatus._cap_error_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF octet_length(NEW.error_message) > 4096 THEN
        NEW.error_message := docstatus._cap_text(NEW.error_message);
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION docstatus._cap_error_message IS 'Internal trigger: error_message keeps its first 4096 bytes.';

-- First of the BEFORE triggers: the triggers after it (the history written with the change) see
-- the capped text.
CREATE TRIGGER _050_cap_error_message BEFORE UPDATE OF error_message ON docstatus.extraction_jobs
    FOR EACH ROW EXECUTE FUNCTION docstatus._cap_error_message();

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

-- Row triggers refuse UPDATE and DELETE and a trigger on each partition refuses TRUNCATE; these
-- event triggers refuse dropping or detaching a partition outside maintain_history. Dropping
-- status_events itself (uninstalling) is left alone.
CREATE FUNCTION docstatus._guard_history() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_table text;
BEGIN
    IF current_setting('docstatus.maintaining_history', true) = 'on' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects()
                    WHERE object_type = 'table' AND schema_name = 'docstatus' AND object_name = 'status_events') THEN
            RETURN;
        END IF;
        SELECT object_identity INTO v_table FROM pg_event_trigger_dropped_objects()
         WHERE object_type = 'table' AND schema_name = 'docstatus' AND object_name LIKE 'status\_events\_%'
         LIMIT 1;
    ELSE
        -- After ALTER TABLE: is a partition no longer attached?
        SELECT c.oid::regclass::text INTO v_table FROM pg_class c
         WHERE c.relnamespace = 'docstatus'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
           AND c.relname LIKE 'status\_events\_%'
           AND EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = '_100_append_only_truncate')
         LIMIT 1;
    END IF;
    IF v_table IS NOT NULL THEN
        RAISE EXCEPTION 'docstatus.status_events is append-only: % of partition % refused', TG_TAG, v_table
            USING ERRCODE = 'DS006',
                  HINT = 'Only docstatus.maintain_history() drops history, by settings.history_retention.';
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus._guard_history IS
    'Internal: refuses DROP or DETACH of a status_events partition outside maintain_history (DS006).';
-- Only a superuser may create event triggers. Managed services often install as a non-superuser:
-- there the guard is left out (with a notice) rather than failing the install. Application roles
-- never own the partitions, so they cannot drop or detach them either way; the guard protects
-- history from the owner's own mistakes.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER docstatus_guard_history_drop ON sql_drop
            EXECUTE FUNCTION docstatus._guard_history();
        CREATE EVENT TRIGGER docstatus_guard_history_detach ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
            EXECUTE FUNCTION docstatus._guard_history();
    ELSE
        RAISE NOTICE 'docstatus: not a superuser, so no event triggers guard status_events partitions '
                     'against DROP/DETACH by their owner';
    END IF;
END;
$$;

------------------------------------------------------------------------------------------------
-- API for the DMS: register an upload, validate it, look a document up
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.register_document(
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
COMMENT ON FUNCTION docstatus.register_document IS
    'Registers an uploaded blob as a ''not ready'' document. The same container and blob again '
    'returns the existing row. DS003 on a blank or too long name (container 63 characters, blob '
    'name 1024 characters and 2048 bytes, filename 1024, MIME type 255) or a negative size.';

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
COMMENT ON FUNCTION docstatus.validate_document IS
    'Promotes an uploaded document: retrievable and accepted -> ''ready'' with one pending job; '
    'not retrievable -> stays ''not ready'' with status_reason (validate again later); rejected '
    '-> ''failed'' with the reason: an empty document, one larger than settings.max_document_bytes '
    '(both judged on the registered size_bytes), or a MIME type not in allowed_mime_types. Accepts '
    'a document that failed validation again. Any other document is returned unchanged. '
    'p_reason: why the blob is not retrievable, appended to status_reason. p_blob_size: the size '
    'of the blob as read; one that differs from the registered size_bytes makes it not retrievable.';

CREATE FUNCTION docstatus.create_extraction_job(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
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
COMMENT ON FUNCTION docstatus.create_extraction_job IS
    'Returns the job named by the key (any state), else the active job of a ''ready'' document '
    '(recording the key on it), creating it if missing. DS001 for a document that is not ready.';

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

------------------------------------------------------------------------------------------------
-- API for workers: claim, heartbeat, move the stages, record the result, fail or release
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.claim_extraction_job(p_worker_id text, p_lease interval DEFAULT '5 minutes')
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
COMMENT ON FUNCTION docstatus.claim_extraction_job IS
    'Gives the unheld job of a ''ready'' document that has waited longest since its not_before '
    '(a retry waits for its backoff) to p_worker_id with a lease; zero rows when none is free. '
    'Never the same job to two workers (FOR UPDATE SKIP LOCKED).';

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

CREATE FUNCTION docstatus.heartbeat_job(p_job_id bigint, p_worker_id text, p_lease interval DEFAULT '5 minutes')
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
COMMENT ON FUNCTION docstatus.heartbeat_job IS
    'Extends the lease of a job its worker holds; false when that worker does not hold it or '
    'the lease already ran out (the job is the reaper''s then). DS002 for an unknown job.';

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

CREATE FUNCTION docstatus.record_result(
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
COMMENT ON FUNCTION docstatus.record_result IS
    'Records the blobs (in the document''s container) holding the extracted text and the fields '
    'of the document''s active job; again for the same job replaces them. Call it before '
    'mark_processing_done. Lease rules as mark_ocr_running (DS004).';

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

CREATE FUNCTION docstatus.mark_attempt_failed(
    p_document_id bigint, p_error_message text, p_worker_id text DEFAULT NULL)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
BEGIN
    IF coalesce(btrim(p_error_message), '') = '' THEN
        PERFORM docstatus._raise_invalid_argument('a failure needs an error message');
    END IF;
    v_document := docstatus._advance_document(p_document_id, p_worker_id, 'failed', 'failed',
                                              p_error_message, 'failed', p_error_message);
    IF docstatus._queue_next_attempt(p_document_id, true) IS NOT NULL THEN
        SELECT * INTO v_document FROM docstatus.documents WHERE id = p_document_id;
    END IF;
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus.mark_attempt_failed IS
    'A failure worth retrying (a timeout, a service down): as mark_processing_failed, then, while '
    'the attempts that count are fewer than settings.max_attempts, back to ''ready'' with the next '
    'attempt after its backoff, as the reaper does. Returns the document: ''ready'' when retried, '
    '''failed'' when the attempts are used up. Lease rules as mark_ocr_running (DS004).';

-- The graph has no way back from 'in progress' to 'ready', and history is never rewritten, so
-- a release is what the reaper does, at once and for free: this attempt fails (released) and
-- the next one is queued with no wait. A release does not count against max_attempts: a
-- document should not run out of attempts because workers were redeployed while it ran.
CREATE FUNCTION docstatus.release_job(p_job_id bigint, p_worker_id text, p_reason text DEFAULT 'shutting down')
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
COMMENT ON FUNCTION docstatus.release_job IS
    'A worker gives back a job it holds, unfinished (on shutdown): the attempt fails with '
    '''released by worker <id>: <reason>'' and released = true, and the document is queued again '
    'at once with the next attempt; a release does not count against settings.max_attempts. DS004 '
    'unless p_worker_id holds the job with an unexpired lease; DS002 for an unknown job.';

------------------------------------------------------------------------------------------------
-- API for operators and readers: retry, results, the event cursor, error groups, counts
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.retry_document(p_document_id bigint, p_idempotency_key text DEFAULT NULL)
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
COMMENT ON FUNCTION docstatus.retry_document IS
    'Operator retry of a document that failed during processing: back to ''ready'' with a new job, '
    'attempt + 1, whatever max_attempts says. A key that already names a job returns that job. '
    'DS001 for a document that failed validation (validate it again) or did not fail.';

CREATE FUNCTION docstatus.retry_failed_documents(p_error_pattern text)
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document_id bigint;
BEGIN
    IF p_error_pattern IS NULL OR p_error_pattern = '' THEN
        RAISE EXCEPTION 'an error pattern is needed (as failure_summary.error_pattern spells it)'
            USING ERRCODE = 'DS003', DETAIL = json_build_object('error_pattern', p_error_pattern)::text;
    END IF;
    -- The failed documents whose latest job failed with this pattern; the failed-jobs index
    -- (extraction_jobs_failed) keeps this a read of failed jobs only.
    FOR v_document_id IN
        SELECT j.document_id
          FROM docstatus.extraction_jobs j
          JOIN docstatus.documents d ON d.id = j.document_id
         WHERE j.status = 'failed' AND d.text_extraction_status = 'failed'
           AND docstatus.normalise_error(j.error_message) = p_error_pattern
           AND j.attempt = (SELECT max(l.attempt) FROM docstatus.extraction_jobs l WHERE l.document_id = j.document_id)
         ORDER BY j.document_id
    LOOP
        RETURN NEXT docstatus.retry_document(v_document_id);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.retry_failed_documents IS
    'retry_document for every failed document whose latest job failed with this error pattern '
    '(normalise_error, as failure_summary groups them), in document order; returns the new jobs. '
    'All or nothing: a document another session moves meanwhile makes retry_document raise DS001 '
    'and nothing is retried. DS003 for an empty pattern.';

CREATE TYPE docstatus.document_list_entry AS (
    document_id            bigint,
    filename               text,
    mime_type              text,
    size_bytes             bigint,
    state                  text,
    text_extraction_status text,
    processing_status      text,
    status_reason          text,
    status_entered_at      timestamptz,
    created_at             timestamptz,
    updated_at             timestamptz
);
COMMENT ON TYPE docstatus.document_list_entry IS
    'A row of list_documents: the document, its state (document_states) and both statuses.';

CREATE FUNCTION docstatus.list_documents(
    p_state text DEFAULT NULL, p_processing_status text DEFAULT NULL, p_mime_type text DEFAULT NULL,
    p_filename_contains text DEFAULT NULL,
    p_created_from timestamptz DEFAULT NULL, p_created_to timestamptz DEFAULT NULL,
    p_updated_from timestamptz DEFAULT NULL, p_updated_to timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS SETOF docstatus.document_list_entry
-- A custom plan per call: the filters left NULL drop out of the plan, so each combination gets
-- the index that fits it instead of one generic plan for all.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_text_extraction_status text;
    v_processing_status text;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 1000, not %', coalesce(p_limit::text, 'null')
            USING ERRCODE = 'DS003', DETAIL = json_build_object('limit', p_limit)::text;
    END IF;
    IF p_state IS NOT NULL THEN
        SELECT s.text_extraction_status, s.processing_status INTO v_text_extraction_status, v_processing_status
          FROM docstatus.document_states s WHERE s.state = p_state;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown document state %', p_state
                USING ERRCODE = 'DS003', DETAIL = json_build_object('state', p_state)::text;
        END IF;
    END IF;
    IF p_processing_status IS NOT NULL AND NOT EXISTS (
            SELECT FROM docstatus.document_states s WHERE s.processing_status = p_processing_status) THEN
        RAISE EXCEPTION 'unknown processing status %', p_processing_status
            USING ERRCODE = 'DS003', DETAIL = json_build_object('processing_status', p_processing_status)::text;
    END IF;

    RETURN QUERY
    SELECT d.id, d.filename, d.mime_type, d.size_bytes, s.state, d.text_extraction_status,
           d.processing_status, d.status_reason, d.status_entered_at, d.created_at, d.updated_at
      FROM docstatus.documents d
      JOIN docstatus.document_states s
        ON s.text_extraction_status = d.text_extraction_status AND s.processing_status = d.processing_status
     WHERE (v_text_extraction_status IS NULL OR d.text_extraction_status = v_text_extraction_status)
       AND (v_processing_status IS NULL OR d.processing_status = v_processing_status)
       AND (p_processing_status IS NULL OR d.processing_status = p_processing_status)
       AND (p_mime_type IS NULL OR d.mime_type = p_mime_type)
       -- A substring, not a LIKE pattern: % and _ in a filename are only characters.
       AND (p_filename_contains IS NULL OR strpos(lower(d.filename), lower(p_filename_contains)) > 0)
       AND (p_created_from IS NULL OR d.created_at >= p_created_from)
       AND (p_created_to IS NULL OR d.created_at < p_created_to)
       AND (p_updated_from IS NULL OR d.updated_at >= p_updated_from)
       AND (p_updated_to IS NULL OR d.updated_at < p_updated_to)
       AND (p_after_id IS NULL OR d.id < p_after_id)
     ORDER BY d.id DESC
     LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION docstatus.list_documents IS
    'Documents newest first, filtered by state (a document_states name), processing_status, MIME '
    'type, a filename substring (case-insensitive) and created/updated ranges ([from, to)); keyset '
    'pagination: p_after_id is the last document_id of the previous page, so a deep page costs what '
    'the first does. DS003 for an unknown state or stage or a p_limit outside 1..1000.';

CREATE TYPE docstatus.documents_minute AS (
    minute  timestamptz,
    entered bigint,
    ended   bigint
);
COMMENT ON TYPE docstatus.documents_minute IS
    'A row of documents_per_minute: documents registered (entered) and finished, completed or '
    'failed (ended), in the minute starting at minute.';

CREATE FUNCTION docstatus.documents_per_minute(p_period interval DEFAULT '1 hour')
RETURNS SETOF docstatus.documents_minute
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_since timestamptz;
BEGIN
    IF p_period IS NULL OR p_period < interval '1 minute' OR p_period > interval '1 day' THEN
        RAISE EXCEPTION 'p_period must be between 1 minute and 1 day, not %', coalesce(p_period::text, 'null')
            USING ERRCODE = 'DS003', DETAIL = json_build_object('period', p_period)::text;
    END IF;
    v_since := date_trunc('minute', now() - p_period);
    RETURN QUERY
    WITH per_minute AS (
        SELECT date_trunc('minute', e.occurred_at) AS minute,
               count(*) FILTER (WHERE e.from_status IS NULL) AS entered,
               count(*) FILTER (WHERE e.from_status IS NOT NULL) AS ended
          FROM docstatus.status_events e
         -- occurred_at bounds the read to the partitions and BRIN ranges of the period.
         WHERE e.occurred_at >= v_since
           AND e.kind = 'text_extraction'
           AND (e.from_status IS NULL
                OR e.to_status IN (SELECT s.text_extraction_status FROM docstatus.document_states s WHERE s.final))
         GROUP BY 1)
    SELECT m.minute, coalesce(p.entered, 0)::bigint, coalesce(p.ended, 0)::bigint
      FROM generate_series(v_since, date_trunc('minute', now()), interval '1 minute') AS m (minute)
      LEFT JOIN per_minute p USING (minute)
     ORDER BY m.minute;
END;
$$;
COMMENT ON FUNCTION docstatus.documents_per_minute IS
    'Per minute of the last p_period (1 minute to 1 day; default an hour), documents registered '
    '(entered) and documents that reached a final state of document_states (ended), from '
    'status_events; every minute has a row, zeros included. DS003 for a p_period out of range.';

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

CREATE FUNCTION docstatus.events_after(
    p_after_tx xid8 DEFAULT '0', p_after_id bigint DEFAULT 0, p_limit integer DEFAULT 1000)
RETURNS SETOF docstatus.status_events
-- VOLATILE: the horizon is read in a snapshot taken after the events (see below).
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_horizon docstatus.history_horizon;
BEGIN
    IF p_after_tx IS NULL OR p_after_id IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        PERFORM docstatus._raise_invalid_argument(
            format('cursor must be non-null and limit positive, got (%s, %s) limit %s', p_after_tx, p_after_id, p_limit));
    END IF;
    -- Ids are taken before commit, so "id > last seen" would skip an event whose transaction
    -- commits late. Events of transactions older than every running one are final: hand out
    -- only those, in (tx_id, id) order, and the cursor never passes an event still to come.
    -- Partitions are by time, not by cursor: every partition's (tx_id, id) index is merged.
    RETURN QUERY
    SELECT * FROM docstatus.status_events
     WHERE (tx_id, id) > (p_after_tx, p_after_id)
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY tx_id, id
     LIMIT p_limit;
    -- Read after the events: a partition dropped while the read above waited for it is
    -- already in this newer snapshot's horizon (in READ COMMITTED, the default).
    SELECT * INTO v_horizon FROM docstatus.history_horizon;
    IF (p_after_tx, p_after_id) < (v_horizon.dropped_through_tx, v_horizon.dropped_through_id) THEN
        RAISE EXCEPTION 'cursor (%, %) is older than the retained history', p_after_tx, p_after_id
            USING ERRCODE = 'DS007',
                  DETAIL = json_build_object('after_tx', p_after_tx::text, 'after_id', p_after_id,
                                             'oldest_tx', v_horizon.dropped_through_tx::text,
                                             'oldest_id', v_horizon.dropped_through_id)::text,
                  HINT = 'Events up to the oldest cursor in DETAIL were dropped (settings.history_retention); '
                         'resume from it after rebuilding what needed them.';
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus.events_after IS
    'Catch-up read for subscribers: committed events after the cursor (p_after_tx, p_after_id), '
    'in (tx_id, id) order, only from transactions older than every running one. The next cursor '
    'is the (tx_id, id) of the last row. A long-open writing transaction delays, never loses. '
    'A cursor below the retained history raises DS007, with the oldest available cursor in DETAIL.';

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

-- Failed jobs are grouped by what their errors have in common, not by the ids and times in them.
CREATE FUNCTION docstatus.normalise_error(p_message text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT btrim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
           regexp_replace(regexp_replace(p_message,
               -- quoted values: 'x', "x"
               $re$'[^']*'|"[^"]*"$re$, '<value>', 'g'),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'gi'),
               -- timestamps as PostgreSQL and ISO 8601 print them
               '\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)?', '<time>', 'g'),
               -- the reaper's 'lease expired: worker w1 held the job until ...'
               '\m(worker) +[^ ]+', '\1 <worker>', 'gi'),
               -- hex ids: 0x..., and words of 6+ hex digits with a digit and a letter
               '\m(0x[0-9a-f]+|(?=[0-9a-f]{6,}\M)(?=[0-9a-f]*[a-f])[0-9a-f]*[0-9][0-9a-f]*)\M', '<hex>', 'gi'),
               '\d+', '<n>', 'g'),
               '\s+', ' ', 'g'));
END;
COMMENT ON FUNCTION docstatus.normalise_error IS
    'An error message with its variable parts replaced: quoted values -> <value>, uuids -> <uuid>, '
    'timestamps -> <time>, the word after "worker" -> <worker>, hex ids -> <hex>, other digits -> '
    '<n>, whitespace squeezed. failure_summary groups by it; SELECT docstatus.normalise_error(''...'') '
    'shows which group a message falls in.';

-- STABLE and not inlinable (a sub-select), so the planner evaluates it when estimating: it sees
-- how few events lie past the fold and reads them through status_events_cursor.
CREATE FUNCTION docstatus.status_counters_folded_below() RETURNS xid8
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce((SELECT folded_below_tx FROM docstatus.status_counters_fold), '0'::xid8);
END;
COMMENT ON FUNCTION docstatus.status_counters_folded_below IS
    'status_counters_fold.folded_below_tx: events of transactions from here on are not in status_counters yet.';

------------------------------------------------------------------------------------------------
-- Views: what an operator asks from psql, the CLI and monitoring
------------------------------------------------------------------------------------------------

-- The documents still moving. The predicate is that of documents_active_by_status, spelled out
-- here once, so a query on this view reads that index (the 1% still moving), never the rest.
CREATE VIEW docstatus.active_documents AS
SELECT * FROM docstatus.documents
 WHERE text_extraction_status NOT IN ('completed', 'failed');
COMMENT ON VIEW docstatus.active_documents IS
    'Documents in a non-final state (not completed, not failed); reads only documents_active_by_status.';

CREATE VIEW docstatus.stuck_documents AS
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
COMMENT ON VIEW docstatus.stuck_documents IS
    'Documents whose current state has lasted longer than its stage_slas.max_duration, with the '
    'active job (if any) and its holder. Reads only the documents_active_by_status index.';

CREATE VIEW docstatus.failure_summary AS
WITH per_document AS (
    SELECT docstatus.normalise_error(j.error_message) AS error_pattern, j.document_id,
           count(*) AS failures, min(j.completed_at) AS first_seen, max(j.completed_at) AS last_seen,
           (array_agg(j.error_message ORDER BY j.completed_at DESC, j.id DESC))[1] AS example_error
      FROM docstatus.extraction_jobs j
     WHERE j.status = 'failed'
     GROUP BY 1, 2)
SELECT error_pattern, sum(failures)::bigint AS failures, count(*) AS documents,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       (array_agg(example_error ORDER BY last_seen DESC, document_id DESC))[1] AS example_error,
       (array_agg(document_id ORDER BY last_seen DESC, document_id DESC))[1:5] AS example_document_ids
  FROM per_document
 GROUP BY error_pattern
 ORDER BY failures DESC, last_seen DESC;
COMMENT ON VIEW docstatus.failure_summary IS
    'Failed jobs grouped by normalise_error(error_message): failed jobs, distinct documents, first '
    'and last failure, the latest raw message, and up to five documents that failed so, latest first.';

CREATE VIEW docstatus.document_overview AS
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
COMMENT ON VIEW docstatus.document_overview IS
    'One row per document: its state, both statuses and for how long, its current job (latest '
    'attempt: id, status, attempt, holder) and last_error: the latest failed job''s error, or the '
    'status_reason of a document that failed validation. Filter on document_id for one document.';

CREATE VIEW docstatus.status_counts AS
SELECT kind, status, sum(count)::bigint AS count
  FROM (SELECT kind, status, count FROM docstatus.status_counters
        UNION ALL
        SELECT e.kind, change.status, change.delta
          FROM docstatus.status_events e
         CROSS JOIN LATERAL (VALUES (e.to_status, 1), (e.from_status, -1)) AS change (status, delta)
         WHERE e.tx_id >= docstatus.status_counters_folded_below() AND change.status IS NOT NULL
       ) AS counted
 GROUP BY kind, status
 ORDER BY kind, status;
COMMENT ON VIEW docstatus.status_counts IS
    'How many documents are in each text_extraction_status and processing_status (kind '
    'text_extraction, processing) and how many jobs in each status (kind job), zeros included. Exact '
    'in every snapshot: status_counters plus the status_events not folded into them yet.';

CREATE VIEW docstatus.event_delivery AS SELECT * FROM docstatus.event_delivery_delay();
COMMENT ON VIEW docstatus.event_delivery IS
    'One row: pending_events not yet deliverable by events_after and the oldest open writing transaction holding them.';

------------------------------------------------------------------------------------------------
-- Maintenance: reaper, counters, history, stuck alerts; one pass by run_maintenance
------------------------------------------------------------------------------------------------

-- Workers call run_maintenance every few seconds; cron or pg_cron may call it or its parts.
-- After the views: check_stuck and run_maintenance return and read rows of stuck_documents.

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
CREATE FUNCTION docstatus.reap_expired_jobs()
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

CREATE FUNCTION docstatus.fold_status_counters() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_from xid8;
    v_below xid8;
    v_events bigint;
BEGIN
    -- One fold at a time; a second caller leaves the work to the one running.
    SELECT folded_below_tx INTO v_from FROM docstatus.status_counters_fold FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- As in events_after: transactions older than every running one are final, so their events
    -- can be folded and no event of a late commit is ever skipped.
    v_below := pg_snapshot_xmin(pg_current_snapshot());
    IF v_below <= v_from THEN
        -- Nothing finished since (an idle system, or one old writer holding everything back).
        UPDATE docstatus.status_counters_fold SET folded_at = now();
        RETURN 0;
    END IF;
    WITH folded AS (
            SELECT kind, from_status, to_status FROM docstatus.status_events
             WHERE tx_id >= v_from AND tx_id < v_below),
         counted AS (
            INSERT INTO docstatus.status_counters AS c (kind, status, count)
            SELECT f.kind, change.status, sum(change.delta)
              FROM folded f
             CROSS JOIN LATERAL (VALUES (f.to_status, 1), (f.from_status, -1)) AS change (status, delta)
             WHERE change.status IS NOT NULL
             GROUP BY f.kind, change.status
            ON CONFLICT (kind, status) DO UPDATE SET count = c.count + excluded.count)
    SELECT count(*) INTO v_events FROM folded;
    UPDATE docstatus.status_counters_fold SET folded_below_tx = v_below, folded_at = now();
    RETURN v_events;
END;
$$;
COMMENT ON FUNCTION docstatus.fold_status_counters IS
    'Adds the status_events of finished transactions since the last fold to status_counters and '
    'returns how many it folded (0 when another fold is running). check_stuck calls it; run either '
    'every minute or so to keep status_counts fast.';

CREATE FUNCTION docstatus.maintain_history(
    OUT partitions_created integer, OUT partitions_dropped integer,
    OUT oldest_cursor_tx xid8, OUT oldest_cursor_id bigint, OUT managed_by text)
LANGUAGE plpgsql SECURITY DEFINER
-- UTC: period boundaries and pg_partman's names must not depend on the caller's time zone.
-- lock_timeout: attaching and dropping wait for readers of status_events, and writers would
-- queue behind a waiting DDL; better to give up and try again on the next run.
SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' SET lock_timeout = '2s' AS $$
DECLARE
    v_settings docstatus.settings;
    v_partman name;
    v_registered boolean := false;
    v_partitions_before integer;
    v_partition record;
    v_last_tx xid8;
    v_last_id bigint;
    v_folded_below xid8;
BEGIN
    partitions_created := 0;
    partitions_dropped := 0;
    SELECT * INTO v_settings FROM docstatus.settings;
    -- One run at a time; a second caller returns at once.
    IF pg_try_advisory_xact_lock(hashtext('docstatus.maintain_history')) THEN
        -- Lets this transaction create and drop partitions past the guard (_guard_history).
        PERFORM set_config('docstatus.maintaining_history', 'on', true);

        SELECT n.nspname INTO v_partman
          FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_partman';
        IF v_partman IS NOT NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM %I.part_config WHERE parent_table = $1)', v_partman)
               INTO v_registered USING 'docstatus.status_events';
        END IF;
        IF NOT v_registered THEN
            partitions_created := docstatus._create_history_partitions(v_settings.history_partition_interval);
        END IF;
        -- pg_partman, where installed, takes over from here on. It creates a default partition
        -- of its own, so ours goes first, once empty (the step above emptied it).
        IF v_partman IS NOT NULL AND NOT v_registered
           AND NOT EXISTS (SELECT FROM docstatus.status_events_default) THEN
            DROP TABLE docstatus.status_events_default;
            EXECUTE format('SELECT %I.create_parent(p_parent_table => $1, p_control => ''occurred_at'', '
                           'p_type => ''native'', p_interval => $2, p_premake => 4, p_start_partition => $3, '
                           'p_automatic_maintenance => ''off'', p_jobmon => false)', v_partman)
              USING 'docstatus.status_events',
                    CASE v_settings.history_partition_interval WHEN interval '7 days' THEN 'weekly' ELSE 'daily' END,
                    (SELECT max(upper_bound) FROM docstatus._history_partitions())::text;
            v_registered := true;
        END IF;
        IF v_registered THEN
            SELECT count(*) INTO v_partitions_before FROM docstatus._history_partitions();
            EXECUTE format('SELECT %I.run_maintenance(p_parent_table => $1, p_jobmon => false)', v_partman)
              USING 'docstatus.status_events';
            partitions_created := partitions_created
                + (SELECT count(*) FROM docstatus._history_partitions()) - v_partitions_before;
            managed_by := 'pg_partman';
        ELSE
            managed_by := 'built-in';
        END IF;
        PERFORM docstatus._protect_history_partition(partition) FROM docstatus._history_partitions();

        IF v_settings.history_retention IS NOT NULL THEN
            -- Counts of events not folded into status_counters yet would go wrong: fold first,
            -- and keep a partition until all of its events are folded.
            PERFORM docstatus.fold_status_counters();
            v_folded_below := docstatus.status_counters_folded_below();
            FOR v_partition IN
                SELECT * FROM docstatus._history_partitions()
                 WHERE NOT is_default AND upper_bound <= now() - v_settings.history_retention
                 ORDER BY upper_bound
            LOOP
                EXECUTE format('SELECT tx_id, id FROM %s ORDER BY tx_id DESC, id DESC LIMIT 1', v_partition.partition)
                   INTO v_last_tx, v_last_id;
                EXIT WHEN v_last_tx >= v_folded_below;
                BEGIN
                    -- The horizon moves in the same transaction as the drop: a reader sees both or neither.
                    UPDATE docstatus.history_horizon
                       SET (dropped_through_tx, dropped_through_id) = (v_last_tx, v_last_id)
                     WHERE (dropped_through_tx, dropped_through_id) < (v_last_tx, v_last_id);
                    UPDATE docstatus.history_horizon SET dropped_at = now();
                    EXECUTE format('DROP TABLE %s', v_partition.partition);
                    partitions_dropped := partitions_dropped + 1;
                EXCEPTION WHEN lock_not_available THEN
                    RAISE WARNING 'maintain_history: % is in use, dropped on a later run', v_partition.partition;
                    EXIT;
                END;
            END LOOP;
        END IF;
        PERFORM set_config('docstatus.maintaining_history', '', true);
    END IF;
    SELECT dropped_through_tx, dropped_through_id INTO oldest_cursor_tx, oldest_cursor_id
      FROM docstatus.history_horizon;
END;
$$;
COMMENT ON FUNCTION docstatus.maintain_history IS
    'Partition upkeep and retention of status_events: creates the partitions of the coming periods '
    '(through pg_partman when that extension is installed, else itself), then drops the partitions '
    'older than settings.history_retention, whole. Returns what it did, the oldest cursor '
    'events_after still serves, and who manages the partitions. Run it every few minutes: the '
    'worker does, or pg_cron; concurrent runs are harmless.';

CREATE FUNCTION docstatus.check_stuck() RETURNS SETOF docstatus.stuck_documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The sla goes out as an ISO 8601 duration (PT15M) whatever the session's IntervalStyle.
SET IntervalStyle = 'iso_8601' AS $$
DECLARE
    v_stuck docstatus.stuck_documents;
BEGIN
    PERFORM docstatus.fold_status_counters();
    -- ON CONFLICT: a stay already alerted on (by an earlier call, or a concurrent one that
    -- committed first) is left out.
    FOR v_stuck IN
        WITH stuck AS (SELECT * FROM docstatus.stuck_documents),
             alerted AS (
                INSERT INTO docstatus.stuck_alerts (document_id, status_entered_at, state, sla)
                SELECT document_id, status_entered_at, state, sla FROM stuck
                ON CONFLICT DO NOTHING
                RETURNING document_id, status_entered_at)
        SELECT stuck.* FROM stuck JOIN alerted USING (document_id, status_entered_at)
         ORDER BY stuck.status_entered_at, stuck.document_id
    LOOP
        PERFORM pg_notify('docstatus_alerts', json_build_object(
            'document_id', v_stuck.document_id, 'job_id', v_stuck.job_id, 'kind', 'stuck',
            'state', v_stuck.state, 'entered_at', v_stuck.status_entered_at, 'sla', v_stuck.sla,
            'at', now())::text);
        RETURN NEXT v_stuck;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.check_stuck IS
    'Alerts on documents newly stuck: one docstatus_alerts NOTIFY per document and stay '
    '({"document_id", "job_id", "kind": "stuck", "state", "entered_at", "sla", "at"}), recorded in '
    'stuck_alerts so it is never repeated; returns those documents. Also folds the status '
    'counters. Run it every minute or so (worker loop, cron).';

-- What run_maintenance did: one row per reaped job and per newly stuck document, or one row
-- saying it skipped (another session holds the maintenance lock) or that the stuck check failed.
CREATE TYPE docstatus.maintenance_action AS (
    action        text,   -- 'reaped', 'stuck', 'skipped', 'stuck check failed', 'history upkeep failed'
    job_id        bigint,
    document_id   bigint,
    attempt       integer,
    worker_id     text,
    error_message text
);
COMMENT ON TYPE docstatus.maintenance_action IS
    'A row of run_maintenance: action reaped (the job, its attempt, the worker whose lease ran out, '
    'the error), stuck (the document newly stuck and its active job), skipped, stuck check failed '
    'or history upkeep failed (error_message).';

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
        -- With the stuck check, about once a minute: status_events partitions and retention.
        -- Its DDL waits at most its lock_timeout (2 s) for a lock, the reaped rows held meanwhile.
        BEGIN  -- a savepoint: failing upkeep keeps the reaping and the check
            PERFORM docstatus.maintain_history();
        EXCEPTION WHEN OTHERS THEN
            RETURN NEXT ROW('history upkeep failed', NULL, NULL, NULL, NULL, SQLERRM)::docstatus.maintenance_action;
        END;
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus.run_maintenance IS
    'One maintenance pass, one session at a time (an advisory lock; the others get one ''skipped'' '
    'row): reap_expired_jobs, then with p_check_stuck check_stuck and maintain_history. Workers '
    'call it every few seconds; cron or pg_cron may too.';

------------------------------------------------------------------------------------------------
-- Roles and grants: least privilege, one block per role
------------------------------------------------------------------------------------------------

-- Roles are cluster-wide, so they are created only when missing.
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['docstatus_reader', 'docstatus_dms', 'docstatus_worker', 'docstatus_operator'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
    -- The dms, worker and operator roles have the reader's rights.
    IF NOT pg_has_role('docstatus_dms', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_dms;
    END IF;
    IF NOT pg_has_role('docstatus_worker', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_worker;
    END IF;
    IF NOT pg_has_role('docstatus_operator', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_operator;
    END IF;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docstatus FROM PUBLIC;
GRANT USAGE ON SCHEMA docstatus TO docstatus_reader, docstatus_dms, docstatus_worker;

-- A function granted to two roles keeps its grantees in the order granted, and pg_dump shows
-- that order: the blocks stay in this order (dms, worker, reader, then operator).

-- docstatus_dms, the document management system: registers uploads and validates them.
GRANT EXECUTE ON FUNCTION docstatus.register_document(text, text, text, text, bigint),
                          docstatus.register_documents(text[], text[], text[], text[], bigint[]),
                          docstatus.validate_document(bigint, boolean, text, text, bigint),
                          docstatus.create_extraction_job(bigint, text),
                          docstatus.require_document(bigint) TO docstatus_dms;

-- docstatus_worker: claims and runs jobs, and runs the maintenance pass.
GRANT EXECUTE ON FUNCTION docstatus.create_extraction_job(bigint, text),
                          docstatus.claim_extraction_job(text, interval),
                          docstatus.claim_jobs(text, interval, integer, boolean),
                          docstatus.heartbeat_job(bigint, text, interval),
                          docstatus.mark_ocr_running(bigint, text),
                          docstatus.mark_llm_running(bigint, text),
                          docstatus.mark_processing_done(bigint, text),
                          docstatus.mark_processing_failed(bigint, text, text),
                          docstatus.record_result(bigint, text, text, text),
                          docstatus.finish_job(bigint, text, text, text),
                          docstatus.mark_attempt_failed(bigint, text, text),
                          docstatus.release_job(bigint, text, text),
                          docstatus.retry_document(bigint, text),
                          docstatus.reap_expired_jobs(),
                          docstatus.fold_status_counters(),
                          docstatus.maintain_history(),
                          docstatus.check_stuck(),
                          docstatus.run_maintenance(boolean) TO docstatus_worker;

-- docstatus_reader (the dms and worker roles are members): every table and view, the event
-- cursor, lookups.
GRANT SELECT ON ALL TABLES IN SCHEMA docstatus TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.events_after(xid8, bigint, integer),
                          docstatus.event_delivery_delay(),
                          docstatus.normalise_error(text),
                          docstatus.status_counters_folded_below(),
                          docstatus.require_document(bigint),
                          docstatus.current_result(bigint),
                          docstatus.next_job_due(),
                          docstatus.list_documents(text, text, text, text, timestamptz, timestamptz,
                                                   timestamptz, timestamptz, bigint, integer),
                          docstatus.documents_per_minute(interval) TO docstatus_reader;

-- docstatus_operator (a reader too): the dashboard's actions, and `docstatus retry` / `reap`.
GRANT EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint),
                          docstatus.retry_document(bigint, text),
                          docstatus.retry_failed_documents(text),
                          docstatus.reap_expired_jobs() TO docstatus_operator;

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

-- docstatus_operator's use of the schema after docstatus_owner's, in the order the migrations
-- grant them (pg_dump shows grantees in the order granted).
GRANT USAGE ON SCHEMA docstatus TO docstatus_operator;

------------------------------------------------------------------------------------------------
-- First run
------------------------------------------------------------------------------------------------

-- The counters start folded, and the partitions of the current and the coming periods exist.
DO $$ BEGIN PERFORM docstatus.fold_status_counters(); END $$;
SELECT docstatus.maintain_history();
