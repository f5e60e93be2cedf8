-- Client.maintain_history. Columns in models.HistoryMaintenance field order.
SELECT partitions_created, partitions_dropped, oldest_cursor_tx::text::bigint AS oldest_cursor_tx,
       oldest_cursor_id, managed_by
  FROM docstatus.maintain_history()
