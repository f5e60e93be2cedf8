-- Removes everything 0003_operations_views created; documents, jobs and history are untouched.
DROP FUNCTION docstatus.check_stuck();
DROP TABLE docstatus.stuck_alerts;
DROP FUNCTION docstatus.fold_status_counters();
DROP VIEW docstatus.status_counts;
DROP FUNCTION docstatus.status_counters_folded_below();
DROP TABLE docstatus.status_counters_fold;
DROP TABLE docstatus.status_counters;
DROP VIEW docstatus.document_overview;
DROP VIEW docstatus.failure_summary;
DROP FUNCTION docstatus.normalise_error(text);
DROP VIEW docstatus.stuck_documents;
DROP TABLE docstatus.stage_slas;
