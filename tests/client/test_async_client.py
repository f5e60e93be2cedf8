"""AsyncClient mirrors Client: same methods and signatures, same results, same transactions."""

import asyncio
import inspect

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from docstatus import AsyncClient, Client, Document, InvalidTransition, JobStatus

from .helpers import new_blob


def public_methods(cls):
    return {name: member for name, member in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def test_same_methods_and_signatures_as_client():
    sync, mirrored = public_methods(Client), public_methods(AsyncClient)
    assert set(sync) == set(mirrored)
    for name, method in sync.items():
        assert inspect.signature(method) == inspect.signature(mirrored[name]), name
        assert getattr(method, "sql_function", None) == getattr(mirrored[name], "sql_function", None), name
        if name not in ("close",):
            assert inspect.iscoroutinefunction(mirrored[name]), name


async def lifecycle(client: AsyncClient) -> int:
    document = await client.register_document("docs", new_blob(), "f.pdf", "application/pdf", 10)
    await client.validate_document(document.id, True, "application/pdf")
    while (job := await client.claim_extraction_job("w1")) is None:
        pass  # with concurrent lifecycles the oldest free job may be taken: another is coming
    await client.mark_ocr_running(job.document_id, "w1")
    await client.mark_llm_running(job.document_id, "w1")
    await client.mark_processing_done(job.document_id, "w1")
    return job.document_id


def test_lifecycle_over_an_async_connection(db_dsn, conn):
    async def run():
        async with await AsyncClient.connect(db_dsn) as client:
            document_id = await lifecycle(client)
            with pytest.raises(InvalidTransition):
                await client.mark_ocr_running(document_id)
            return (await client.get_document(document_id), await client.list_jobs(document_id),
                    await client.history(document_id), await client.events_after(limit=100))

    document, jobs, history, events = asyncio.run(run())
    sync = Client(conn)
    assert isinstance(document, Document) and document == sync.get_document(document.id)
    assert jobs == sync.list_jobs(document.id) and jobs[0].status is JobStatus.DONE
    assert history == events == sync.history(document.id)


def test_idle_async_connection_commits_each_call(db_dsn, conn):
    async def run(blob):
        own = await psycopg.AsyncConnection.connect(db_dsn)  # not autocommit
        try:
            client = AsyncClient(own)
            await client.register_document("docs", blob, "f.pdf")
            return own.info.transaction_status
        finally:
            await own.close()

    blob = new_blob()
    assert asyncio.run(run(blob)) == pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM docstatus.documents WHERE blob_name = %s", (blob,)).fetchone()[0] == 1


def test_async_pool_returns_every_connection(db_dsn):
    async def run():
        async with AsyncConnectionPool(db_dsn, min_size=1, max_size=3, open=False) as pool:
            client = AsyncClient(pool)
            documents = await asyncio.gather(*(lifecycle(client) for _ in range(6)))
            stats = pool.get_stats()
            return documents, stats

    documents, stats = asyncio.run(run())
    assert len(set(documents)) == 6
    assert stats["pool_available"] == stats["pool_size"] and stats["requests_waiting"] == 0


def test_rejects_sync_objects(conn):
    with pytest.raises(TypeError):
        AsyncClient(conn)  # type: ignore[arg-type]  # the wrong type, on purpose
