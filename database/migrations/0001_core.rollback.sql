-- Removes everything 0001_core created in this database.
-- The roles docstatus_reader, docstatus_dms and docstatus_worker are cluster-wide and may be
-- granted to login roles or used by other databases, so they are left in place.
DROP SCHEMA docstatus CASCADE;
