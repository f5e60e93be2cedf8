-- Client.document_states, in display order. Columns in models.DocumentStateInfo field order.
SELECT state, text_extraction_status, processing_status, final, display_order
  FROM docstatus.document_states
 ORDER BY display_order
