-- Client.stuck_counts_by_state: stuck documents per state, zeros included (every state of stage_slas).
SELECT s.state, coalesce(stuck.documents, 0) AS documents
  FROM docstatus.stage_slas s
  LEFT JOIN (SELECT state, count(*) AS documents
               FROM docstatus.stuck_documents
              GROUP BY state) stuck USING (state)
 ORDER BY s.state
