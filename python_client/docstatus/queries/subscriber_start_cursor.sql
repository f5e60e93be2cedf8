-- Subscriber started without a cursor: "from now on". events_after hands out only events of
-- transactions older than the snapshot's xmin, so (xmin, 0) is just past every event it could
-- hand out now, and before every event it will hand out later.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint
