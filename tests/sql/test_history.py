"""status_events partitioned by time: upkeep, retention by dropping partitions, DS007, DS006.

Events of another day are written with an explicit occurred_at (the tests run as superuser):
they land in the default partition until maintain_history gives their period a partition.
"""

import json
import re

import psycopg
import pytest
from psycopg import sql

from docstatus import Client, CursorTooOld, Subscriber

from .states import make_document, register


def partitions(conn):
    """(name, lower bound, upper bound) of each status_events partition, oldest first."""
    return conn.execute(
        "SELECT partition::text, lower_bound, upper_bound FROM docstatus._history_partitions()"
        " ORDER BY is_default, upper_bound").fetchall()


def write_event_at(conn, days_ago, document_id=1):
    """One event whose occurred_at lies days_ago in the past; its (tx_id, id) cursor."""
    return conn.execute(
        "INSERT INTO docstatus.status_events (document_id, kind, from_status, to_status, occurred_at)"
        " VALUES (%s, 'processing', NULL, 'pending extraction', now() - make_interval(days => %s))"
        " RETURNING tx_id::text::bigint, id", (document_id, days_ago)).fetchone()


def all_events(conn, after=(0, 0), limit=1):
    """Every event events_after hands out from a cursor, read limit at a time."""
    seen, cursor = [], after
    while rows := conn.execute("SELECT tx_id::text::bigint, id FROM docstatus.events_after(%s::text::xid8, %s, %s)",
                               (*cursor, limit)).fetchall():
        seen.extend(rows)
        cursor = rows[-1]
    return seen


def test_partitions_for_now_and_four_periods_ahead(conn):
    names = [name for name, _, _ in partitions(conn)]
    assert len(names) == 6 and names[-1] == "docstatus.status_events_default"
    (days,) = conn.execute("SELECT count(DISTINCT upper_bound - lower_bound) FROM docstatus._history_partitions()"
                           " WHERE NOT is_default").fetchone()
    assert days == 1
    result = conn.execute("SELECT * FROM docstatus.maintain_history()").fetchone()
    assert result == (0, 0, "0", 0, "built-in")  # nothing new: it is idempotent (xid8 comes as text)


def test_weekly_partitions_continue_where_daily_ones_end(conn):
    conn.execute("UPDATE docstatus.settings SET history_partition_interval = '7 days'")
    created, *_ = conn.execute("SELECT * FROM docstatus.maintain_history()").fetchone()
    assert created >= 4
    bounds = [(lower, upper) for _, lower, upper in partitions(conn)[:-1]]
    assert all(upper == next_lower
               for (_, upper), (next_lower, _) in zip(bounds, bounds[1:], strict=False)), "no gap, no overlap"
    weekly = [name for name, _, _ in partitions(conn) if re.fullmatch(r"docstatus\.status_events_p\d{4}w\d{2}", name)]
    assert len(weekly) >= 4, partitions(conn)  # ISO weeks, named as pg_partman names them


def test_bad_settings_are_refused(conn):
    for statement in ("UPDATE docstatus.settings SET history_partition_interval = '1 hour'",
                      "UPDATE docstatus.settings SET history_retention = '0 days'",
                      "UPDATE docstatus.settings SET history_retention = '-1 day'"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(statement)


def test_the_lifecycle_writes_into_the_partition_of_today(conn):
    doc_id = make_document(conn, ("completed", "done"))
    (where,) = conn.execute(
        "SELECT DISTINCT tableoid::regclass::text FROM docstatus.status_events WHERE document_id = %s",
        (doc_id,)).fetchone()
    assert where == conn.execute(
        "SELECT 'docstatus.' || docstatus._history_partition_name(date_trunc('day', now(), 'UTC'), '1 day')"
    ).fetchone()[0]


def test_events_after_never_skips_across_partitions(conn):
    # Cursor order is transaction order, partitions are by time: interleave them.
    expected = [write_event_at(conn, days_ago) for days_ago in (3, 0, 5, -2, 1, 0, 4)]
    expected.append(tuple(conn.execute("SELECT tx_id::text::bigint, id FROM docstatus.status_events"
                                       " WHERE id = (SELECT max(id) FROM docstatus.status_events)").fetchone()))
    conn.execute("SELECT docstatus.maintain_history()")  # old events move out of the default partition
    assert conn.execute("SELECT count(*) FROM docstatus.status_events_default").fetchone() == (0,)
    assert len({name for name, *_ in partitions(conn)}) >= 9
    assert all_events(conn) == sorted(set(expected))
    assert all_events(conn, limit=1000) == sorted(set(expected))


def test_retention_drops_old_partitions_whole_and_events_after_says_ds007(conn):
    dropped = [write_event_at(conn, days_ago) for days_ago in (100, 120, 95)]
    kept = write_event_at(conn, days_ago=2)
    doc_id = register(conn)
    conn.execute("UPDATE docstatus.settings SET history_retention = '30 days'")
    created, dropped_count, oldest_tx, oldest_id, managed_by = conn.execute(
        "SELECT * FROM docstatus.maintain_history()").fetchone()
    assert (created, dropped_count, managed_by) == (4, 3, "built-in")  # 2 days ago, 95, 100 and 120 days ago
    assert (int(oldest_tx), oldest_id) == max(dropped)
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE occurred_at < now() - interval '30 days'"
                        ).fetchone() == (0,)
    # Documents stay; only their history ages out.
    assert conn.execute("SELECT count(*) FROM docstatus.documents WHERE id = %s", (doc_id,)).fetchone() == (1,)

    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM docstatus.events_after('0', 0, 10)")
    assert raised.value.sqlstate == "DS007"
    detail = json.loads(raised.value.diag.message_detail)
    assert (int(detail["oldest_tx"]), detail["oldest_id"]) == max(dropped)
    assert (detail["after_tx"], detail["after_id"]) == ("0", 0)

    # From the oldest cursor on, nothing is missing.
    retained = all_events(conn, after=max(dropped))
    assert kept in retained
    assert len(retained) == conn.execute(
        "SELECT count(*) FROM docstatus.status_events WHERE (tx_id, id) > (%s::text::xid8, %s)",
        max(dropped)).fetchone()[0]


def test_null_retention_keeps_everything(conn):
    write_event_at(conn, days_ago=400)
    conn.execute("UPDATE docstatus.settings SET history_retention = NULL")
    assert conn.execute("SELECT partitions_dropped FROM docstatus.maintain_history()").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM docstatus.status_events WHERE occurred_at < now() - interval '399 days'"
                        ).fetchone() == (1,)
    assert all_events(conn, limit=100)  # no DS007 from the beginning


def test_events_not_folded_into_the_counters_wait_for_the_fold(connect, conn):
    # An open writing transaction older than the old event holds the fold, hence the drop, back:
    # dropping unfolded events would leave status_counts wrong.
    holder = connect()
    holder.execute("SELECT pg_current_xact_id()")
    write_event_at(conn, days_ago=100)
    conn.execute("UPDATE docstatus.settings SET history_retention = '30 days'")
    assert conn.execute("SELECT partitions_dropped FROM docstatus.maintain_history()").fetchone() == (0,)
    holder.commit()
    assert conn.execute("SELECT partitions_dropped FROM docstatus.maintain_history()").fetchone() == (1,)


@pytest.mark.parametrize("statement", [
    "DELETE FROM docstatus.status_events",
    "UPDATE docstatus.status_events SET detail = 'x'",
    "TRUNCATE docstatus.status_events",
    "DELETE FROM {partition}",
    "UPDATE {partition} SET detail = 'x'",
    "TRUNCATE {partition}",
    "TRUNCATE docstatus.status_events_default",
    "DROP TABLE {partition}",
    "ALTER TABLE docstatus.status_events DETACH PARTITION {partition}",
    "ALTER TABLE docstatus.status_events DETACH PARTITION docstatus.status_events_default",
])
def test_history_stays_append_only_on_every_partition(conn, statement):
    register(conn)
    ((partition,),) = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM docstatus.status_events").fetchall()
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql.SQL(statement).format(partition=sql.SQL(partition)))
    assert raised.value.sqlstate == "DS006"
    assert conn.execute("SELECT count(*) FROM docstatus.status_events").fetchone() == (2,)


def test_the_worker_role_maintains_history_the_reader_may_not(conn):
    conn.execute("CREATE ROLE history_worker_login LOGIN IN ROLE docstatus_worker")
    conn.execute("CREATE ROLE history_reader_login LOGIN IN ROLE docstatus_reader")
    try:
        conn.execute("SET ROLE history_worker_login")
        assert conn.execute("SELECT managed_by FROM docstatus.maintain_history()").fetchone() == ("built-in",)
        conn.execute("SET ROLE history_reader_login")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT docstatus.maintain_history()")
    finally:
        conn.execute("RESET ROLE")
        conn.execute("DROP ROLE history_worker_login")
        conn.execute("DROP ROLE history_reader_login")


def test_a_busy_run_returns_at_once(connect, conn):
    other = connect()
    other.execute("SELECT docstatus.maintain_history()")  # holds the advisory lock until commit
    assert conn.execute("SELECT managed_by FROM docstatus.maintain_history()").fetchone() == (None,)
    other.rollback()


def test_client_and_subscriber_raise_cursor_too_old(db_dsn, conn):
    dropped = write_event_at(conn, days_ago=100)
    conn.execute("UPDATE docstatus.settings SET history_retention = '30 days'")
    with Client.connect(db_dsn) as client:
        result = client.maintain_history()
        assert (result.partitions_dropped, tuple(result.oldest_cursor)) == (1, dropped)
        with pytest.raises(CursorTooOld) as raised:
            client.events_after(0, 0)
        assert raised.value.oldest_cursor == dropped and raised.value.cursor == (0, 0)
        assert client.events_after(*raised.value.oldest_cursor) == []

    with Subscriber(db_dsn, since="0:0", poll_interval=0.05) as subscriber:
        with pytest.raises(CursorTooOld) as raised:
            next(iter(subscriber))
    assert raised.value.oldest_cursor == dropped


@pytest.fixture
def partman(conn):
    if conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'").fetchone() == (0,):
        pytest.skip("pg_partman is not installed (Debian: postgresql-15-partman; .ci/run installs it)")
    conn.execute("CREATE SCHEMA partman")
    conn.execute("CREATE EXTENSION pg_partman SCHEMA partman")


def test_pg_partman_takes_over_the_partitions(partman, conn):
    before = {name for name, *_ in partitions(conn)}
    old = write_event_at(conn, days_ago=50)  # waits in the default partition
    result = conn.execute("SELECT * FROM docstatus.maintain_history()").fetchone()
    assert result[4] == "pg_partman"
    assert conn.execute("SELECT partition_interval, premake, automatic_maintenance FROM partman.part_config"
                        " WHERE parent_table = 'docstatus.status_events'").fetchone() == ("1 day", 4, "off")
    after = {name for name, *_ in partitions(conn)}
    assert before <= after  # our partitions are pg_partman's, by name
    assert conn.execute("SELECT count(*) FROM docstatus.status_events_default").fetchone() == (0,)
    assert old in all_events(conn, limit=1000)

    # Retention is still ours: pg_partman's would drop without moving the horizon.
    conn.execute("UPDATE docstatus.settings SET history_retention = '30 days'")
    assert conn.execute("SELECT partitions_dropped, managed_by FROM docstatus.maintain_history()"
                        ).fetchone() == (1, "pg_partman")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM docstatus.events_after('0', 0)")
    assert raised.value.sqlstate == "DS007"
    register(conn)  # the lifecycle writes on
    # Every partition pg_partman made is append-only too.
    for name, *_ in partitions(conn):
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(name)))
        assert raised.value.sqlstate == "DS006"
