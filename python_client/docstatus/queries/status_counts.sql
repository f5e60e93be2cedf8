-- Client.status_counts: documents per status of each column, jobs per status. Columns in
-- models.StatusCount field order; document statuses in document_states display order.
SELECT c.kind, c.status, c.count
  FROM docstatus.status_counts c
 ORDER BY c.kind,
          (SELECT min(s.display_order) FROM docstatus.document_states s
            WHERE c.status IN (s.text_extraction_status, s.processing_status)),
          c.status
