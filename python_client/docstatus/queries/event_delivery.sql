-- Client.event_delivery: the view over docstatus.event_delivery_delay().
SELECT pending_events, oldest_writer_pid, oldest_writer_state, held_for
  FROM docstatus.event_delivery
