-- docstatus status and the metrics: documents per status of each column, jobs per status.
SELECT kind, status, count
  FROM docstatus.status_counts
