-- History that does not grow forever: status_events becomes a table range-partitioned by
-- occurred_at (one partition per settings.history_partition_interval), and partitions older
-- than settings.history_retention are dropped whole, so retention costs no DELETE and no vacuum.
-- A cursor older than what is kept gets DS007 from events_after instead of a silent gap.
-- The existing table becomes the first partition as it is: no row is copied or lost.
-- depends: 0005_one_way_in

------------------------------------------------------------------------------------------------
-- Settings
------------------------------------------------------------------------------------------------

ALTER TABLE docstatus.settings
    ADD COLUMN history_retention interval DEFAULT '90 days' CHECK (history_retention > interval '0'),
    ADD COLUMN history_partition_interval interval NOT NULL DEFAULT '1 day'
        CHECK (history_partition_interval IN (interval '1 day', interval '7 days'));
COMMENT ON COLUMN docstatus.settings.history_retention IS
    'How long status_events are kept: maintain_history drops the partitions whose every event is '
    'older. NULL keeps everything. Documents and jobs are never dropped.';
COMMENT ON COLUMN docstatus.settings.history_partition_interval IS
    'The time range of one status_events partition: 1 day or 7 days (ISO weeks, as pg_partman''s '
    '''weekly''). A change applies to partitions created from then on.';

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


------------------------------------------------------------------------------------------------
-- Partition helpers (internal)
------------------------------------------------------------------------------------------------

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
-- status_events becomes partitioned
------------------------------------------------------------------------------------------------

CREATE TEMPORARY TABLE history_migration (
    statement text, last_id bigint, is_called boolean, upper_bound timestamptz) ON COMMIT DROP;

-- events_after returns rows of the table type: it is recreated below.
DROP FUNCTION docstatus.events_after(xid8, bigint, integer);

DO $$
DECLARE
    v_name text;
BEGIN
    -- Indexes, triggers and views over status_events as they are now (later migrations may
    -- have added some): the partitioned table gets the same, from their own definitions. The
    -- primary key changes, since on a partitioned table it must include the partition key.
    INSERT INTO history_migration (statement)
    SELECT pg_get_indexdef(i.indexrelid)
      FROM pg_index i
     WHERE i.indrelid = 'docstatus.status_events'::regclass AND NOT i.indisprimary;
    INSERT INTO history_migration (statement)
    SELECT pg_get_triggerdef(t.oid)
      FROM pg_trigger t
     WHERE t.tgrelid = 'docstatus.status_events'::regclass AND NOT t.tgisinternal;
    -- Views are bound to the table itself, which is about to become a partition.
    INSERT INTO history_migration (statement)
    SELECT DISTINCT format('CREATE OR REPLACE VIEW %s AS %s', r.ev_class::regclass, pg_get_viewdef(r.ev_class))
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = 'docstatus.status_events'::regclass AND r.ev_class <> 'docstatus.status_events'::regclass;
    INSERT INTO history_migration (last_id, is_called)
    SELECT last_value, is_called FROM docstatus.status_events_id_seq;

    ALTER TABLE docstatus.status_events RENAME TO status_events_legacy;
    ALTER TABLE docstatus.status_events_legacy DROP CONSTRAINT status_events_pkey;
    ALTER TABLE docstatus.status_events_legacy ALTER COLUMN id DROP IDENTITY;
    FOR v_name IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE i.indrelid = 'docstatus.status_events_legacy'::regclass LOOP
        EXECUTE format('ALTER INDEX docstatus.%I RENAME TO %I', v_name, v_name || '_legacy');
    END LOOP;
    -- Attaching gives the partition the row triggers of status_events.
    FOR v_name IN SELECT t.tgname FROM pg_trigger t
                   WHERE t.tgrelid = 'docstatus.status_events_legacy'::regclass AND NOT t.tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON docstatus.status_events_legacy', v_name);
    END LOOP;

    IF EXISTS (SELECT FROM docstatus.status_events_legacy) THEN
        -- It will hold everything up to the end of the current period (or of its latest event).
        INSERT INTO history_migration (upper_bound)
        SELECT docstatus._history_period_start(greatest(now(), max(occurred_at)), s.history_partition_interval)
               + s.history_partition_interval
          FROM docstatus.status_events_legacy, docstatus.settings s
         GROUP BY s.history_partition_interval;
    END IF;
END;
$$;

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
    PRIMARY KEY (id, occurred_at),
    CONSTRAINT status_events_check CHECK ((kind = 'job') = (job_id IS NOT NULL))
) PARTITION BY RANGE (occurred_at);
COMMENT ON TABLE docstatus.status_events IS
    'Append-only history: one row per status change of a document column or a job, creation '
    'included (from_status NULL). The durable truth behind the NOTIFY hints. Partitioned by '
    'occurred_at; maintain_history creates the partitions and drops those older than '
    'settings.history_retention.';

-- Events of a time no partition covers yet wait here until maintain_history moves them.
CREATE TABLE docstatus.status_events_default PARTITION OF docstatus.status_events DEFAULT;

DO $$
DECLARE
    v_statement text;
    v_upper timestamptz;
    v_interval interval;
    v_name name;
BEGIN
    FOR v_statement IN SELECT statement FROM history_migration WHERE statement IS NOT NULL LOOP
        EXECUTE v_statement;
    END LOOP;
    PERFORM setval(pg_get_serial_sequence('docstatus.status_events', 'id'), last_id, is_called)
       FROM history_migration WHERE last_id IS NOT NULL;

    SELECT upper_bound INTO v_upper FROM history_migration WHERE upper_bound IS NOT NULL;
    IF v_upper IS NULL THEN
        DROP TABLE docstatus.status_events_legacy;
        RETURN;
    END IF;
    -- The old table becomes the partition of everything before v_upper, named as the period it
    -- ends with (pg_partman, later, takes it for that period's partition). Attaching scans it
    -- once to check the bound and builds the new primary key's index; nothing is copied.
    SELECT history_partition_interval INTO v_interval FROM docstatus.settings;
    v_name := docstatus._history_partition_name(v_upper - v_interval, v_interval);
    EXECUTE format('ALTER TABLE docstatus.status_events_legacy RENAME TO %I', v_name);
    EXECUTE format('ALTER TABLE docstatus.status_events ATTACH PARTITION docstatus.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                   v_name, v_upper);
    PERFORM docstatus._protect_history_partition(format('docstatus.%I', v_name)::regclass);
END;
$$;

------------------------------------------------------------------------------------------------
-- Upkeep and retention
------------------------------------------------------------------------------------------------

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

------------------------------------------------------------------------------------------------
-- The workers' maintenance pass (run_maintenance, 0005) keeps the history too
------------------------------------------------------------------------------------------------

COMMENT ON TYPE docstatus.maintenance_action IS
    'A row of run_maintenance: action reaped (the job, its attempt, the worker whose lease ran out, '
    'the error), stuck (the document newly stuck and its active job), skipped, stuck check failed '
    'or history upkeep failed (error_message).';


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
-- Measured at a million documents
------------------------------------------------------------------------------------------------

-- failure_summary reads failed jobs only; without this index it scanned every job (164 ms at a
-- million documents in bench/soak.py).
CREATE INDEX extraction_jobs_failed ON docstatus.extraction_jobs (completed_at) WHERE status = 'failed';

------------------------------------------------------------------------------------------------
-- Only maintain_history drops history
------------------------------------------------------------------------------------------------

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
-- events_after: the same cursor over every partition, and DS007 below the retained history
------------------------------------------------------------------------------------------------

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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA docstatus FROM PUBLIC;
GRANT SELECT ON docstatus.status_events, docstatus.status_events_default, docstatus.history_horizon
    TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.events_after(xid8, bigint, integer) TO docstatus_reader;
GRANT EXECUTE ON FUNCTION docstatus.maintain_history() TO docstatus_worker;

SELECT docstatus.maintain_history();
