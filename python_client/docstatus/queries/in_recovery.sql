-- Is this server a hot standby? The Subscriber polls there (NOTIFY is not in the WAL), and the
-- writing commands (upload, worker) refuse it at once instead of failing on every write.
SELECT pg_is_in_recovery()
