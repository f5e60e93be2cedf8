-- Client.stuck_alerts: when check_stuck alerted on the stays stuck now. Columns in
-- models.StuckAlert field order.
SELECT a.document_id, a.status_entered_at, a.state, a.sla, a.alerted_at
  FROM docstatus.stuck_alerts a
  JOIN docstatus.stuck_documents s USING (document_id, status_entered_at)
 ORDER BY a.status_entered_at, a.document_id
