-- Back to one unpartitioned status_events holding every retained event (those retention
-- dropped stay gone), with the indexes, triggers and views it has now.

DROP EVENT TRIGGER IF EXISTS docstatus_guard_history_drop;
DROP EVENT TRIGGER IF EXISTS docstatus_guard_history_detach;
DROP FUNCTION docstatus._guard_history();
-- run_maintenance as 0005 made it, without the history upkeep.
COMMENT ON TYPE docstatus.maintenance_action IS
    'A row of run_maintenance: action reaped (the job, its attempt, the worker whose lease ran out, '
    'the error), stuck (the document newly stuck and its active job), skipped, or stuck check failed '
    '(error_message).';


CREATE OR REPLACE FUNCTION docstatus.run_maintenance(p_check_stuck boolean DEFAULT true)
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
    END IF;
END;
$$;
COMMENT ON FUNCTION docstatus.run_maintenance IS
    'One maintenance pass, one session at a time (an advisory lock; the others get one ''skipped'' '
    'row): reap_expired_jobs, then with p_check_stuck check_stuck. Workers call it every few '
    'seconds; cron or pg_cron may too.';

DROP FUNCTION docstatus.maintain_history();
DROP FUNCTION docstatus.events_after(xid8, bigint, integer);

CREATE TEMPORARY TABLE history_rollback (statement text) ON COMMIT DROP;

DO $$
BEGIN
    -- A partitioned index is defined ON ONLY the parent; the plain table takes it as it is.
    INSERT INTO history_rollback (statement)
    SELECT replace(pg_get_indexdef(i.indexrelid), ' ON ONLY docstatus.status_events ', ' ON docstatus.status_events ')
      FROM pg_index i
     WHERE i.indrelid = 'docstatus.status_events'::regclass AND NOT i.indisprimary;
    INSERT INTO history_rollback (statement)
    SELECT pg_get_triggerdef(t.oid)
      FROM pg_trigger t
     WHERE t.tgrelid = 'docstatus.status_events'::regclass AND NOT t.tgisinternal;
    INSERT INTO history_rollback (statement)
    SELECT DISTINCT format('CREATE OR REPLACE VIEW %s AS %s', r.ev_class::regclass, pg_get_viewdef(r.ev_class))
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = 'docstatus.status_events'::regclass AND r.ev_class <> 'docstatus.status_events'::regclass;
END;
$$;

CREATE TABLE docstatus.status_events_unpartitioned (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    document_id bigint NOT NULL,
    job_id      bigint,
    kind        text NOT NULL CHECK (kind IN ('text_extraction', 'processing', 'job')),
    from_status text,
    to_status   text NOT NULL,
    detail      text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'job') = (job_id IS NOT NULL))
);
INSERT INTO docstatus.status_events_unpartitioned OVERRIDING SYSTEM VALUE
SELECT * FROM docstatus.status_events ORDER BY id;
SELECT setval(pg_get_serial_sequence('docstatus.status_events_unpartitioned', 'id'), last_value, is_called)
  FROM docstatus.status_events_id_seq;

-- The views follow the table they read: point them at the new one before the old one goes.
DO $$
DECLARE
    v_statement text;
BEGIN
    FOR v_statement IN SELECT statement FROM history_rollback WHERE statement LIKE 'CREATE OR REPLACE VIEW %' LOOP
        EXECUTE replace(v_statement, 'docstatus.status_events ', 'docstatus.status_events_unpartitioned ');
    END LOOP;
END;
$$;
DROP TABLE docstatus.status_events;
ALTER TABLE docstatus.status_events_unpartitioned RENAME TO status_events;
ALTER SEQUENCE docstatus.status_events_unpartitioned_id_seq RENAME TO status_events_id_seq;
ALTER INDEX docstatus.status_events_unpartitioned_pkey RENAME TO status_events_pkey;
ALTER TABLE docstatus.status_events RENAME CONSTRAINT status_events_unpartitioned_kind_check TO status_events_kind_check;
ALTER TABLE docstatus.status_events RENAME CONSTRAINT status_events_unpartitioned_check TO status_events_check;
COMMENT ON TABLE docstatus.status_events IS
    'Append-only history: one row per status change of a document column or a job, creation '
    'included (from_status NULL). The durable truth behind the NOTIFY hints.';
GRANT SELECT ON docstatus.status_events TO docstatus_reader;

DO $$
DECLARE
    v_statement text;
BEGIN
    FOR v_statement IN SELECT statement FROM history_rollback WHERE statement NOT LIKE 'CREATE OR REPLACE VIEW %' LOOP
        EXECUTE v_statement;
    END LOOP;
    -- The views again, now that the table has its name back (they name it, not the old one).
    FOR v_statement IN SELECT statement FROM history_rollback WHERE statement LIKE 'CREATE OR REPLACE VIEW %' LOOP
        EXECUTE v_statement;
    END LOOP;
END;
$$;

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
REVOKE ALL ON FUNCTION docstatus.events_after(xid8, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docstatus.events_after(xid8, bigint, integer) TO docstatus_reader;

DROP INDEX docstatus.extraction_jobs_failed;
DROP FUNCTION docstatus._create_history_partitions(interval);
DROP FUNCTION docstatus._create_history_partition(timestamptz, timestamptz, name);
DROP FUNCTION docstatus._protect_history_partition(regclass);
DROP FUNCTION docstatus._history_partitions();
DROP FUNCTION docstatus._history_partition_name(timestamptz, interval);
DROP FUNCTION docstatus._history_period_start(timestamptz, interval);
DROP TABLE docstatus.history_horizon;
ALTER TABLE docstatus.settings DROP COLUMN history_retention, DROP COLUMN history_partition_interval;
