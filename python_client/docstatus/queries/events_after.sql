-- Client.events_after and the subscriber's catch-up. Columns in models.StatusEvent field order.
SELECT id, tx_id::text::bigint AS tx_id, document_id, job_id, kind, from_status, to_status,
       detail, occurred_at
  FROM docstatus.events_after(p_after_tx => %(after_tx)s::text::xid8, p_after_id => %(after_id)s,
                              p_limit => %(limit)s)
