-- Subscriber: are there committed events after the cursor (deliverable or held back by an older
-- open transaction), are per-change notifications on (notify_mode 'off' is off too), how long
-- after a wake-up to read once more (per_transaction and throttled: 2 x notify_interval, for
-- the events whose transaction sent no notification; NULL: never), and is this server (still)
-- a standby? Cheap: an index range scan from the cursor.
SELECT EXISTS (SELECT FROM docstatus.status_events
                WHERE (tx_id, id) > (%(after_tx)s::text::xid8, %(after_id)s)) AS events_waiting,
       (SELECT notify_events AND notify_mode <> 'off' FROM docstatus.settings) AS notify_events,
       (SELECT CASE WHEN notify_mode IN ('per_transaction', 'throttled')
                    THEN 2 * extract(epoch FROM notify_interval)::float8 END
          FROM docstatus.settings) AS recheck_after,
       pg_is_in_recovery() AS in_recovery
