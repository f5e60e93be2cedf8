-- Subscriber: are there committed events after the cursor (deliverable or held back by an older
-- open transaction), are per-change notifications on (notify_mode 'off' is off too), how long
-- after a wake-up to read once more (per_transaction and throttled: 2 x notify_interval, for
-- the events whose transaction sent no notification; NULL: never), and is this server (still)
-- a standby? Cheap: an index range scan from the cursor.
SELECT EXISTS (SELECT FROM docstatus.status_events
                WHERE (tx_id, id) > (%(after_tx)s::text::xid8, %(after_id)s)) AS events_waiting,
       settings.effective_mode <> 'off' AS notify_events,
       -- notify_mode itself, whatever notify_events says.
       CASE WHEN settings.notify_mode IN ('per_transaction', 'throttled')
            THEN 2 * extract(epoch FROM settings.notify_interval)::float8 END AS recheck_after,
       pg_is_in_recovery() AS in_recovery
  -- The effective mode, derived as docstatus._event_hints_due derives it (notify_events false: 'off').
  -- settings has exactly one row (its primary key can only be true; deleting it is refused).
  FROM (SELECT CASE WHEN notify_events THEN notify_mode ELSE 'off' END AS effective_mode,
               notify_mode, notify_interval
          FROM docstatus.settings) AS settings
