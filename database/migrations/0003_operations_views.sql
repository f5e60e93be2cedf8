-- Operations: stage SLAs, stuck documents and their alerts, status counts, failure summary.
-- depends: 0001_core

------------------------------------------------------------------------------------------------
-- Operations: what an operator asks from psql, the CLI and monitoring
------------------------------------------------------------------------------------------------

-- The four states a document should leave on its own, each under one name.
CREATE TABLE docstatus.stage_slas (
    state                  text PRIMARY KEY,
    text_extraction_status text NOT NULL,
    processing_status      text NOT NULL,
    max_duration           interval NOT NULL CHECK (max_duration > interval '0'),
    -- The non-final pairs of documents_status_pair; completed and failed have no SLA.
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

CREATE VIEW docstatus.stuck_documents AS
SELECT d.id AS document_id, s.state, d.text_extraction_status, d.processing_status,
       d.status_entered_at, s.max_duration AS sla, now() - d.status_entered_at AS in_state_for,
       j.id AS job_id, j.attempt, j.worker_id, j.lease_expires_at, d.status_reason
  FROM docstatus.stage_slas s
  JOIN docstatus.documents d
    ON d.processing_status = s.processing_status
   AND d.text_extraction_status = s.text_extraction_status
   AND d.status_entered_at < now() - s.max_duration
  -- The active job, looked up per stuck document (LIMIT 1 keeps it a lookup, not a join that
  -- reads every active job).
  LEFT JOIN LATERAL (
        SELECT id, attempt, worker_id, lease_expires_at FROM docstatus.extraction_jobs
         WHERE document_id = d.id AND status = 'pending extraction' LIMIT 1) j ON true
 -- The predicate of documents_active_by_status, spelled out so the planner may use that index:
 -- only the 1% of documents still moving are read, never the finished ones.
 WHERE d.text_extraction_status NOT IN ('completed', 'failed');
COMMENT ON VIEW docstatus.stuck_documents IS
    'Documents whose current state has lasted longer than its stage_slas.max_duration, with the '
    'active job (if any) and its holder. Reads only the documents_active_by_status index.';

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
       -- The names of stage_slas.state, plus completed and failed.
       CASE d.text_extraction_status WHEN 'not ready' THEN 'uploaded' WHEN 'ready' THEN 'queued'
            WHEN 'in progress' THEN d.processing_status ELSE d.text_extraction_status END AS state,
       d.text_extraction_status, d.processing_status, d.status_entered_at,
       now() - d.status_entered_at AS in_status_for, d.status_reason,
       j.id AS job_id, j.status AS job_status, j.attempt, j.worker_id, j.lease_expires_at,
       coalesce(f.error_message, CASE WHEN d.text_extraction_status = 'failed' THEN d.status_reason END)
           AS last_error,
       d.created_at, d.updated_at
  FROM docstatus.documents d
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

------------------------------------------------------------------------------------------------
-- Status counts without a sequential scan and without a write in the lifecycle
------------------------------------------------------------------------------------------------

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

-- STABLE and not inlinable (a sub-select), so the planner evaluates it when estimating: it sees
-- how few events lie past the fold and reads them through status_events_cursor.
CREATE FUNCTION docstatus.status_counters_folded_below() RETURNS xid8
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce((SELECT folded_below_tx FROM docstatus.status_counters_fold), '0'::xid8);
END;
COMMENT ON FUNCTION docstatus.status_counters_folded_below IS
    'status_counters_fold.folded_below_tx: events of transactions from here on are not in status_counters yet.';

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

-- Everything written so far (an existing install's history) is counted once, here.
DO $$ BEGIN PERFORM docstatus.fold_status_counters(); END $$;

------------------------------------------------------------------------------------------------
-- Stuck alerts
------------------------------------------------------------------------------------------------

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

-- Application roles: read everything above; the worker, which already runs the periodic reaper,
-- runs the periodic checks too.
REVOKE ALL ON FUNCTION docstatus.normalise_error(text), docstatus.status_counters_folded_below(),
                       docstatus.fold_status_counters(), docstatus.check_stuck() FROM PUBLIC;
GRANT SELECT ON docstatus.stage_slas, docstatus.stuck_documents, docstatus.failure_summary,
                docstatus.document_overview, docstatus.status_counters, docstatus.status_counters_fold,
                docstatus.status_counts, docstatus.stuck_alerts TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.normalise_error(text),
                          docstatus.status_counters_folded_below() TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.fold_status_counters(),
                          docstatus.check_stuck() TO docstatus_worker;
