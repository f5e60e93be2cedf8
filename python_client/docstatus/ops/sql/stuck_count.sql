-- docstatus status: how many documents are past their SLA now.
SELECT count(*) AS stuck
  FROM docstatus.stuck_documents
