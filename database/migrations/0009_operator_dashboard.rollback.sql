-- Back to 0008: no dashboard reads or bulk retry, no operator role's grants.

DROP FUNCTION docstatus.retry_failed_documents(text);
DROP FUNCTION docstatus.documents_per_minute(interval);
DROP TYPE docstatus.documents_minute;
DROP FUNCTION docstatus.list_documents(text, text, text, text, timestamptz, timestamptz,
                                       timestamptz, timestamptz, bigint, integer);
DROP TYPE docstatus.document_list_entry;
DROP INDEX docstatus.status_events_by_time;
DROP INDEX docstatus.documents_failed;

-- The role is cluster-wide (other databases may use it): only its rights here go.
REVOKE EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint),
                           docstatus.retry_document(bigint, text),
                           docstatus.reap_expired_jobs() FROM docstatus_operator;
REVOKE USAGE ON SCHEMA docstatus FROM docstatus_operator;
