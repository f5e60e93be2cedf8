"""Random sequences of API calls and raw UPDATEs never break the model's invariants.

Any caller error the contract names (DS001-DS004, a CHECK) is an acceptable answer to a random
call; anything else (DS005 at commit, a unique violation, an internal error) is a bug. After
every step the whole database is checked against the invariants, in SQL.
"""

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

ACCEPTABLE = {"DS001", "DS002", "DS003", "DS004", "23514"}

VIOLATIONS = {
    "active job iff queued or in progress": """
        SELECT d.id FROM docstatus.documents d
         WHERE (SELECT count(*) FROM docstatus.extraction_jobs j
                 WHERE j.document_id = d.id AND j.status = 'pending extraction')
               <> CASE WHEN d.text_extraction_status IN ('ready', 'in progress') THEN 1 ELSE 0 END""",
    "in-progress job has a holder": """
        SELECT j.id FROM docstatus.extraction_jobs j JOIN docstatus.documents d ON d.id = j.document_id
         WHERE d.text_extraction_status = 'in progress' AND j.status = 'pending extraction'
           AND j.worker_id IS NULL""",
    "history ends in the current document statuses": """
        SELECT d.id FROM docstatus.documents d
         WHERE (SELECT to_status FROM docstatus.status_events e WHERE e.document_id = d.id
                   AND e.kind = 'text_extraction' ORDER BY id DESC LIMIT 1) <> d.text_extraction_status
            OR (SELECT to_status FROM docstatus.status_events e WHERE e.document_id = d.id
                   AND e.kind = 'processing' ORDER BY id DESC LIMIT 1) <> d.processing_status""",
    "history ends in the current job status": """
        SELECT j.id FROM docstatus.extraction_jobs j
         WHERE (SELECT to_status FROM docstatus.status_events e WHERE e.job_id = j.id
                 ORDER BY id DESC LIMIT 1) IS DISTINCT FROM j.status""",
    "history is a chain": """
        SELECT e.id FROM docstatus.status_events e
         WHERE e.from_status IS DISTINCT FROM (
                SELECT p.to_status FROM docstatus.status_events p
                 WHERE p.document_id = e.document_id AND p.kind = e.kind
                   AND p.job_id IS NOT DISTINCT FROM e.job_id AND p.id < e.id
                 ORDER BY p.id DESC LIMIT 1)""",
    "attempts count 1..n": """
        SELECT document_id FROM docstatus.extraction_jobs GROUP BY document_id
        HAVING max(attempt) <> count(*) OR min(attempt) <> 1""",
}


class PipelineMachine(RuleBasedStateMachine):
    conn: psycopg.Connection = None  # set by the test

    def __init__(self):
        super().__init__()
        self.blob = 0
        self.documents = []  # this example's documents: the database keeps earlier examples' too

    def call(self, statement, params=()):
        try:
            with self.conn.transaction():
                self.conn.execute(statement, params)
        except psycopg.Error as exc:
            assert exc.sqlstate in ACCEPTABLE, f"{statement} {params}: {exc.sqlstate} {exc}"

    def some_document(self, data):
        # A fixed range, so a replayed example draws the same way whatever the database holds.
        index = data.draw(st.integers(0, 50))
        if index >= len(self.documents):
            return -1 if index == 50 else (self.documents[index % len(self.documents)] if self.documents else -1)
        return self.documents[index]

    @rule()
    def register(self):
        self.blob += 1
        with self.conn.transaction():
            (doc_id,) = self.conn.execute("SELECT id FROM docstatus.register_document('c', %s, 'f')",
                                          (f"{id(self)}-{self.blob}",)).fetchone()
        self.documents.append(doc_id)

    @rule(data=st.data(), retrievable=st.booleans(), mime=st.sampled_from(["application/pdf", "application/zip"]))
    def validate(self, data, retrievable, mime):
        self.call("SELECT docstatus.validate_document(%s, %s, %s)", (self.some_document(data), retrievable, mime))

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def claim(self, worker):
        self.call("SELECT docstatus.claim_extraction_job(%s)", (worker,))

    @rule(data=st.data(), mark=st.sampled_from(["mark_ocr_running", "mark_llm_running", "mark_processing_done"]),
          worker=st.sampled_from([None, "w1", "w2"]))
    def mark(self, data, mark, worker):
        self.call(f"SELECT docstatus.{mark}(%s, %s)", (self.some_document(data), worker))

    @rule(data=st.data(), worker=st.sampled_from([None, "w1", "w2"]))
    def fail(self, data, worker):
        self.call("SELECT docstatus.mark_processing_failed(%s, 'boom', %s)", (self.some_document(data), worker))

    @rule(data=st.data(), key=st.sampled_from([None, "k1", "k2"]))
    def retry(self, data, key):
        self.call("SELECT docstatus.retry_document(%s, %s)", (self.some_document(data), key))

    @rule(data=st.data(), key=st.sampled_from([None, "k1", "k3"]))
    def create_job(self, data, key):
        self.call("SELECT docstatus.create_extraction_job(%s, %s)", (self.some_document(data), key))

    @rule()
    def leases_run_out_and_the_reaper_runs(self):
        self.call("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 second'"
                  " WHERE status = 'pending extraction' AND worker_id IS NOT NULL")
        self.call("SELECT docstatus.reap_expired_jobs()")

    @rule(data=st.data(), pair=st.sampled_from([
        ("not ready", "pending extraction"), ("ready", "pending extraction"), ("in progress", "ocr running"),
        ("in progress", "llm running"), ("completed", "done"), ("failed", "failed")]))
    def raw_update(self, data, pair):
        """An operator's UPDATE in psql: judged by the same triggers, or refused at commit."""
        try:
            with self.conn.transaction():
                self.conn.execute("UPDATE docstatus.documents SET text_extraction_status = %s,"
                                  " processing_status = %s WHERE id = %s", (*pair, self.some_document(data)))
        except psycopg.Error as exc:
            assert exc.sqlstate in ACCEPTABLE | {"DS005"}, exc

    @invariant()
    def invariants_hold(self):
        for name, query in VIOLATIONS.items():
            rows = self.conn.execute(query).fetchall()
            assert rows == [], f"{name}: {rows}"


def test_random_operations_keep_the_invariants(conn):
    PipelineMachine.conn = conn
    machine = PipelineMachine.TestCase
    machine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()
