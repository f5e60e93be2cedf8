-- One maintenance pass (reaper, stuck check) at a time across all workers: the transaction that
-- gets this lock does it, the others skip. Released at the end of the transaction.
SELECT pg_try_advisory_xact_lock(hashtextextended('docstatus.worker.maintenance', 0))
