-- Client.status_transitions: the status graph. Columns in models.StatusTransition field order.
SELECT kind, from_status, to_status FROM docstatus.status_transitions ORDER BY kind, from_status, to_status
