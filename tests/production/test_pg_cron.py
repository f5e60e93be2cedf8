"""pg_cron runs the upkeep inside the database, with no worker alive: run_maintenance (the
reaper, check_stuck and maintain_history) scheduled as the README shows, on a cluster that
preloads pg_cron."""

from __future__ import annotations

import time

import psycopg
import pytest

from .cluster import Cluster, cluster_root, remove

pytestmark = pytest.mark.slow

# The README's schedule, as an operator pastes it into psql (pg_cron's finest grain is a minute).
SCHEDULE = """
SELECT cron.schedule('docstatus-maintenance', '* * * * *', 'SELECT count(*) FROM docstatus.run_maintenance()');
"""

# Test instrument: pg_cron records each run in cron.job_run_details; a trigger there turns the
# record into a notification, so the test waits on it instead of polling.
ANNOUNCE_RUNS = """
CREATE FUNCTION public.announce_cron_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cron_runs', NEW.status);
    RETURN NULL;
END;
$$;
CREATE TRIGGER announce AFTER INSERT OR UPDATE ON cron.job_run_details
    FOR EACH ROW EXECUTE FUNCTION public.announce_cron_run();
"""


def succeeded_jobs(conn) -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT j.jobname FROM cron.job_run_details r JOIN cron.job j USING (jobid) WHERE r.status = 'succeeded'")}


def test_pg_cron_keeps_history_with_no_worker_alive():
    root = cluster_root()
    # Background workers: no libpq connection back to the server, hence no password or pg_hba.
    cluster = Cluster.primary(root, shared_preload_libraries="'pg_cron'", **{
        "cron.database_name": "'docs'", "cron.use_background_workers": "on", "max_worker_processes": "16"})
    try:
        cluster.start()
        dsn = cluster.create_database("docs")
        with psycopg.connect(dsn, autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'").fetchone() == (0,):
                pytest.skip("pg_cron is not installed (Debian: postgresql-15-cron; .ci/run installs it)")
            conn.execute("CREATE EXTENSION pg_cron")
            conn.execute(ANNOUNCE_RUNS)
            # History the retention must drop: an event of 100 days ago, kept 30 days.
            conn.execute("INSERT INTO docstatus.status_events (document_id, kind, to_status, occurred_at)"
                         " VALUES (1, 'processing', 'pending extraction', now() - interval '100 days')")
            conn.execute("UPDATE docstatus.settings SET history_retention = '30 days'")
            conn.execute("LISTEN cron_runs")
            conn.execute(SCHEDULE)

            wanted = {"docstatus-maintenance"}
            deadline = time.monotonic() + 150  # the next minute boundary, on a loaded machine
            while not wanted <= succeeded_jobs(conn):
                remaining = deadline - time.monotonic()
                assert remaining > 0, conn.execute("SELECT * FROM cron.job_run_details").fetchall()
                for _ in conn.notifies(timeout=remaining, stop_after=1):
                    pass
            failed = conn.execute("SELECT return_message FROM cron.job_run_details WHERE status = 'failed'").fetchall()
            assert failed == []
            assert conn.execute("SELECT dropped_at IS NOT NULL FROM docstatus.history_horizon").fetchone() == (True,)
            assert conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone() == (0,)
    finally:
        remove(root, cluster)
