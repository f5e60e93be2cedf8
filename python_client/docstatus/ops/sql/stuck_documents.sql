-- docstatus stuck: documents past their SLA, longest stuck first, with when check_stuck alerted
-- on this stay (NULL: not yet).
SELECT s.document_id, s.state, s.text_extraction_status, s.processing_status, s.status_entered_at,
       s.sla, s.in_state_for, s.job_id, s.attempt, s.worker_id, s.lease_expires_at, s.status_reason,
       a.alerted_at
  FROM docstatus.stuck_documents s
  LEFT JOIN docstatus.stuck_alerts a
    ON a.document_id = s.document_id AND a.status_entered_at = s.status_entered_at
 ORDER BY s.status_entered_at, s.document_id
