-- The worker's wake-up: every docstatus event; it acts on job creations only.
LISTEN docstatus_events
