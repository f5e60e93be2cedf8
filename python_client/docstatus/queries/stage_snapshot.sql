-- Client.stage_snapshot, in one statement (one snapshot): the event cursor "from now on", as the
-- subscriber starts, and the documents already in one of the stages with the time they entered
-- it, so metrics measure their stage durations too.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS cursor_tx_id,
       d.id AS document_id, d.processing_status, d.status_entered_at
  FROM (SELECT 1) AS one
  LEFT JOIN docstatus.active_documents d ON d.processing_status = ANY (%(stages)s::text[])
