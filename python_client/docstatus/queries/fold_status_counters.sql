-- Client.fold_status_counters.
SELECT docstatus.fold_status_counters()
