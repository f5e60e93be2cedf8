-- Client.run_maintenance. Columns in models.MaintenanceAction field order.
SELECT action, job_id, document_id, attempt, worker_id, error_message
  FROM docstatus.run_maintenance(p_check_stuck => %(check_stuck)s)
