-- Client.status_counters_folded_below (xid8, read as a number).
SELECT docstatus.status_counters_folded_below()::text::bigint
