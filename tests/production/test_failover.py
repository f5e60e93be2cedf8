"""A failover under load: two worker processes and a subscriber on a multi-host DSN
(target_session_attrs=read-write); the primary stops (fast shutdown) mid-run and its streaming
standby is promoted. Every document ends exactly once and every committed event is delivered
exactly once across the switch. A second subscriber reads the standby itself: it polls there,
and listens once the standby is promoted."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from docstatus import Client, Subscriber
from docstatus.dms import DocumentStore

from ..pipeline.processes import WorkerProcess
from .cluster import Cluster, cluster_root, remove

DOCUMENTS = 40


class Collector:
    """Events handed out by the subscriber thread, and a wait on a condition over them."""

    def __init__(self) -> None:
        self.events: list = []
        self._changed = threading.Condition()

    def add(self, event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, condition, timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.events), timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; {len(self.events)} events")

    def done(self) -> set[int]:
        return {e.document_id for e in self.events if e.kind == "processing" and e.to_status == "done"}


@pytest.mark.slow
def test_a_switchover_mid_run_loses_nothing_and_repeats_nothing(azurite):
    root = cluster_root()
    primary = Cluster.primary(root)
    clusters = [primary]
    workers: list[WorkerProcess] = []
    subscriber = on_standby = None
    try:
        primary.start()
        primary_dsn = primary.create_database("docs")
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            conn.execute("UPDATE docstatus.settings SET retry_base_delay = '0.2 seconds', retry_max_delay = '1 second'")
        standby = primary.standby(root)
        clusters.append(standby)
        both = (f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} dbname=docs user=postgres "
                "target_session_attrs=read-write connect_timeout=2")

        collector = Collector()
        subscriber = Subscriber(both, probe_interval=1.0, probe_timeout=2.0, reconnect_delay=0.05,
                                max_reconnect_delay=0.5)
        subscriber.start(collector.add)
        assert subscriber.wait_caught_up(timeout=30)
        start = subscriber.cursor
        on_standby_collector = Collector()
        on_standby = Subscriber(standby.dsn("docs"), since=start, poll_interval=0.2, reconnect_delay=0.05,
                                max_reconnect_delay=0.5)
        on_standby.start(on_standby_collector.add)
        assert on_standby.wait_caught_up(timeout=30) and on_standby.polling

        args = ["--ocr", "tests.production.engines:slow_ocr", "--concurrency", "2", "--lease", "3",
                "--poll-interval", "1", "--grace-period", "5"]
        workers = [WorkerProcess(both, azurite.connection_string, *args, "--worker-id", name)
                   for name in ("left", "right")]
        for worker in workers:
            worker.wait_for_event("worker started", timeout=30)

        with ConnectionPool(primary_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool, \
                DocumentStore(pool, azurite.connection_string, "failover", retry_total=0) as store:
            document_ids = [store.upload_and_validate(f"DOC-{n}\nbody {n}\n".encode(), f"doc-{n}.txt").document.id
                            for n in range(DOCUMENTS)]

        collector.wait_for(lambda _: len(collector.done()) >= DOCUMENTS // 4, 60, "a quarter of the documents")
        assert len(collector.done()) < DOCUMENTS, "the run ended before the switchover: nothing was tested"
        primary.stop("fast")  # a planned switchover: the standby has received every commit
        standby.promote()

        collector.wait_for(lambda _: collector.done() >= set(document_ids), 120, "every document done")
        for worker in workers:
            assert worker.process.poll() is None, worker.log_tail()

        new_primary = standby.dsn("docs")
        with Client.connect(new_primary) as client:
            committed = []
            cursor = start
            while batch := client.events_after(*cursor, limit=1000):
                committed.extend(batch)
                cursor = batch[-1].cursor
        collector.wait_for(lambda events: len(events) >= len(committed), 30, "every committed event")
        on_standby_collector.wait_for(lambda events: len(events) >= len(committed), 30,
                                      "every committed event, on the promoted standby")
        assert not on_standby.polling, "promoted: it listens again"
        with psycopg.connect(new_primary) as conn:
            statuses = conn.execute("SELECT text_extraction_status, processing_status, count(*)"
                                    " FROM docstatus.documents WHERE id = ANY(%s) GROUP BY 1, 2",
                                    (document_ids,)).fetchall()
            ends = Counter(row[0] for row in conn.execute(
                "SELECT document_id FROM docstatus.status_events WHERE kind = 'processing' AND to_status = 'done'"))
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [worker.wait() for worker in workers]
        for each in (subscriber, on_standby):
            if each is not None:
                each.stop()
        logs = [cluster.log_tail() for cluster in clusters]
        remove(root, *reversed(clusters))

    assert codes == [0] * len(workers), logs
    delivered = [event.id for event in collector.events]
    assert len(delivered) == len(set(delivered)), "an event was delivered twice"
    assert delivered == [event.id for event in committed], "delivered in events_after order, each one"
    assert [event.id for event in on_standby_collector.events] == delivered

    assert statuses == [("completed", "done", DOCUMENTS)]
    assert ends == Counter({document_id: 1 for document_id in document_ids}), "each document ended exactly once"
