-- Client.document_state_moves: which of the six document states can follow which. A move from
-- one pair of statuses to another is allowed when each column either stays or makes a move of
-- status_transitions: exactly what the transition trigger and the pair CHECK let an UPDATE do.
-- Columns in models.DocumentStateMove field order; in display order of both states.
SELECT source.state, target.state
  FROM docstatus.document_states source
  JOIN docstatus.document_states target ON target.state <> source.state
 WHERE (target.text_extraction_status = source.text_extraction_status
        OR EXISTS (SELECT FROM docstatus.status_transitions t
                     WHERE t.kind = 'text_extraction'
                       AND t.from_status = source.text_extraction_status
                       AND t.to_status = target.text_extraction_status))
   AND (target.processing_status = source.processing_status
        OR EXISTS (SELECT FROM docstatus.status_transitions t
                     WHERE t.kind = 'processing'
                       AND t.from_status = source.processing_status
                       AND t.to_status = target.processing_status))
 ORDER BY source.display_order, target.display_order
