-- Subscriber: are there committed events after the cursor (deliverable or held back by an older
-- open transaction), are per-change notifications on, and is this server (still) a standby?
-- Cheap: an index range scan from the cursor.
SELECT EXISTS (SELECT FROM docstatus.status_events
                WHERE (tx_id, id) > (%(after_tx)s::text::xid8, %(after_id)s)) AS events_waiting,
       (SELECT notify_events FROM docstatus.settings) AS notify_events,
       pg_is_in_recovery() AS in_recovery
