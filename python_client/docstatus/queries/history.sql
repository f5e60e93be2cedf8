-- Client.history: a document's status changes. Its writers hold the document's row lock,
-- so within one document id order is the order of the changes.
SELECT id, tx_id::text::bigint AS tx_id, document_id, job_id, kind, from_status, to_status,
       detail, occurred_at
  FROM docstatus.status_events
 WHERE document_id = %(document_id)s
 ORDER BY id
