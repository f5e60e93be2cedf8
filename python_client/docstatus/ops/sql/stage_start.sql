-- Metrics, once at start (in one REPEATABLE READ snapshot): the event cursor "from now on", as
-- the subscriber starts, and the documents already in an OCR or LLM stage with the time they
-- entered it, so their stage durations are measured too. Reads only the active-documents index.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS cursor_tx_id,
       d.id AS document_id, d.processing_status, d.status_entered_at
  FROM (SELECT 1) AS one
  LEFT JOIN docstatus.documents d
    ON d.text_extraction_status NOT IN ('completed', 'failed')
   AND d.processing_status = ANY (%(stages)s::text[])
