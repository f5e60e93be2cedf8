"""0007 turns a populated status_events into a partitioned one without losing or copying a row."""

from __future__ import annotations

import time

import psycopg
import pytest
import yoyo

from docstatus import migrations

EVENTS = 1_000_000
PARTITIONING = "0007_history_partitions"


def apply_migrations(dsn: str, keep) -> list[str]:
    """Applies the pending migrations that ``keep(id)`` selects; their ids."""
    backend = yoyo.get_backend(migrations.yoyo_url(dsn))
    try:
        with backend.lock():
            chosen = backend.to_apply(yoyo.read_migrations(str(migrations.find_migrations_dir())).filter(
                lambda migration: keep(migration.id)))
            backend.apply_migrations(chosen)
        return [migration.id for migration in chosen]
    finally:
        backend.connection.close()


def fingerprint(conn) -> tuple:
    """Cheap to compute over a million rows, and changed by any lost or altered row."""
    return conn.execute(
        "SELECT count(*), sum(id), sum(document_id), sum(tx_id::text::bigint), sum(length(to_status)),"
        "       sum(extract(epoch FROM occurred_at)::bigint), count(job_id), max(id)"
        "  FROM docstatus.status_events").fetchone()


@pytest.mark.slow
def test_a_million_events_survive_partitioning(empty_db_dsn):
    assert PARTITIONING not in apply_migrations(empty_db_dsn, lambda id_: id_ < PARTITIONING)
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        # Ten events a document over the last 60 days, as the triggers would write them, in one
        # transaction (written directly: the history has no insert guard, and this is 20x faster).
        conn.execute(
            "INSERT INTO docstatus.status_events (document_id, job_id, kind, from_status, to_status, occurred_at)"
            " SELECT g / 10, CASE WHEN g %% 10 = 3 THEN g / 10 END,"
            "        CASE WHEN g %% 10 = 3 THEN 'job' WHEN g %% 2 = 0 THEN 'processing' ELSE 'text_extraction' END,"
            "        NULL, 'pending extraction', now() - interval '60 days' * (1 - g::float8 / %s)"
            "   FROM generate_series(1, %s) AS g", (EVENTS, EVENTS))
        before = fingerprint(conn)

    started = time.monotonic()
    assert apply_migrations(empty_db_dsn, lambda id_: True)[0] == PARTITIONING
    print(f"\n0007 on {EVENTS:,} events: {time.monotonic() - started:.1f} s")

    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        assert fingerprint(conn) == before
        assert conn.execute("SELECT relkind FROM pg_class WHERE oid = 'docstatus.status_events'::regclass"
                            ).fetchone() == ("p",)
        # The old table is the partition of everything up to the end of today, as it was.
        (legacy,) = conn.execute(
            "SELECT partition::text FROM docstatus._history_partitions() WHERE lower_bound IS NULL AND NOT is_default"
        ).fetchone()
        assert conn.execute(f"SELECT count(*) FROM {legacy}").fetchone() == (EVENTS,)
        # The cursor still walks it in order, from anywhere.
        middle = conn.execute("SELECT tx_id, id FROM docstatus.status_events WHERE id = %s", (EVENTS // 2,)).fetchone()
        page = conn.execute("SELECT id FROM docstatus.events_after(%s, %s, 5)", middle).fetchall()
        assert [row[0] for row in page] == list(range(EVENTS // 2 + 1, EVENTS // 2 + 6))
        # New events continue the ids and land in today's partition... of the old table.
        conn.execute("SELECT docstatus.register_document('c', 'after-0007', 'f')")
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM docstatus.status_events WHERE id > %s",
                            (before[-1],)).fetchone() == ([before[-1] + 1, before[-1] + 2],)
        # The old rows are append-only like the new ones.
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(f"DELETE FROM {legacy} WHERE id = 1")
        assert raised.value.sqlstate == "DS006"
        # The default 90 days keep all of them.
        assert conn.execute("SELECT partitions_dropped FROM docstatus.maintain_history()").fetchone() == (0,)

    # And back: rolling 0007 back keeps every row too.
    backend = yoyo.get_backend(migrations.yoyo_url(empty_db_dsn))
    try:
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(
                yoyo.read_migrations(str(migrations.find_migrations_dir())).filter(lambda m: m.id >= PARTITIONING)))
    finally:
        backend.connection.close()
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE oid = 'docstatus.status_events'::regclass"
                            ).fetchone() == ("r",)
        after_rollback = fingerprint(conn)
        assert after_rollback[0] == EVENTS + 2 and after_rollback[-1] == before[-1] + 2
