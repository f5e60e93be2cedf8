-- The operator dashboard's reads and actions: keyset-paginated document listing, documents
-- entered and ended per minute, retry of every failed document of one error pattern, and the
-- role docstatus_operator (the reader's rights plus retry, validate again and reap).
-- depends: 0008_hardening

------------------------------------------------------------------------------------------------
-- Indexes: history by time (documents_per_minute), failed documents (list_documents)
------------------------------------------------------------------------------------------------

-- BRIN: a few bytes per 128 pages, and an insert touches the summary of the last range only
-- (events arrive in time order), so writers pay next to nothing for it.
CREATE INDEX status_events_by_time ON docstatus.status_events USING brin (occurred_at);

-- The document list filtered to failed documents, newest first: failed documents are few and
-- spread over the whole table, so without this a page read every document (141 ms at a million
-- in bench/dashboard.py). Status updates are not HOT anyway (documents_active_by_status covers
-- the status columns), so a writer pays only when a document enters failed.
CREATE INDEX documents_failed ON docstatus.documents (id) WHERE text_extraction_status = 'failed';

------------------------------------------------------------------------------------------------
-- Reads
------------------------------------------------------------------------------------------------

CREATE TYPE docstatus.document_list_entry AS (
    document_id            bigint,
    filename               text,
    mime_type              text,
    size_bytes             bigint,
    state                  text,
    text_extraction_status text,
    processing_status      text,
    status_reason          text,
    status_entered_at      timestamptz,
    created_at             timestamptz,
    updated_at             timestamptz
);
COMMENT ON TYPE docstatus.document_list_entry IS
    'A row of list_documents: the document, its state (document_states) and both statuses.';

CREATE FUNCTION docstatus.list_documents(
    p_state text DEFAULT NULL, p_processing_status text DEFAULT NULL, p_mime_type text DEFAULT NULL,
    p_filename_contains text DEFAULT NULL,
    p_created_from timestamptz DEFAULT NULL, p_created_to timestamptz DEFAULT NULL,
    p_updated_from timestamptz DEFAULT NULL, p_updated_to timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL, p_limit integer DEFAULT 50)
RETURNS SETOF docstatus.document_list_entry
-- A custom plan per call: the filters left NULL drop out of the plan, so each combination gets
-- the index that fits it instead of one generic plan for all.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_text_extraction_status text;
    v_processing_status text;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        RAISE EXCEPTION 'p_limit must be between 1 and 1000, not %', coalesce(p_limit::text, 'null')
            USING ERRCODE = 'DS003', DETAIL = json_build_object('limit', p_limit)::text;
    END IF;
    IF p_state IS NOT NULL THEN
        SELECT s.text_extraction_status, s.processing_status INTO v_text_extraction_status, v_processing_status
          FROM docstatus.document_states s WHERE s.state = p_state;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown document state %', p_state
                USING ERRCODE = 'DS003', DETAIL = json_build_object('state', p_state)::text;
        END IF;
    END IF;
    IF p_processing_status IS NOT NULL AND NOT EXISTS (
            SELECT FROM docstatus.document_states s WHERE s.processing_status = p_processing_status) THEN
        RAISE EXCEPTION 'unknown processing status %', p_processing_status
            USING ERRCODE = 'DS003', DETAIL = json_build_object('processing_status', p_processing_status)::text;
    END IF;

    RETURN QUERY
    SELECT d.id, d.filename, d.mime_type, d.size_bytes, s.state, d.text_extraction_status,
           d.processing_status, d.status_reason, d.status_entered_at, d.created_at, d.updated_at
      FROM docstatus.documents d
      JOIN docstatus.document_states s
        ON s.text_extraction_status = d.text_extraction_status AND s.processing_status = d.processing_status
     WHERE (v_text_extraction_status IS NULL OR d.text_extraction_status = v_text_extraction_status)
       AND (v_processing_status IS NULL OR d.processing_status = v_processing_status)
       AND (p_processing_status IS NULL OR d.processing_status = p_processing_status)
       AND (p_mime_type IS NULL OR d.mime_type = p_mime_type)
       -- A substring, not a LIKE pattern: % and _ in a filename are only characters.
       AND (p_filename_contains IS NULL OR strpos(lower(d.filename), lower(p_filename_contains)) > 0)
       AND (p_created_from IS NULL OR d.created_at >= p_created_from)
       AND (p_created_to IS NULL OR d.created_at < p_created_to)
       AND (p_updated_from IS NULL OR d.updated_at >= p_updated_from)
       AND (p_updated_to IS NULL OR d.updated_at < p_updated_to)
       AND (p_after_id IS NULL OR d.id < p_after_id)
     ORDER BY d.id DESC
     LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION docstatus.list_documents IS
    'Documents newest first, filtered by state (a document_states name), processing_status, MIME '
    'type, a filename substring (case-insensitive) and created/updated ranges ([from, to)); keyset '
    'pagination: p_after_id is the last document_id of the previous page, so a deep page costs what '
    'the first does. DS003 for an unknown state or stage or a p_limit outside 1..1000.';

CREATE TYPE docstatus.documents_minute AS (
    minute  timestamptz,
    entered bigint,
    ended   bigint
);
COMMENT ON TYPE docstatus.documents_minute IS
    'A row of documents_per_minute: documents registered (entered) and finished, completed or '
    'failed (ended), in the minute starting at minute.';

CREATE FUNCTION docstatus.documents_per_minute(p_period interval DEFAULT '1 hour')
RETURNS SETOF docstatus.documents_minute
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_since timestamptz;
BEGIN
    IF p_period IS NULL OR p_period < interval '1 minute' OR p_period > interval '1 day' THEN
        RAISE EXCEPTION 'p_period must be between 1 minute and 1 day, not %', coalesce(p_period::text, 'null')
            USING ERRCODE = 'DS003', DETAIL = json_build_object('period', p_period)::text;
    END IF;
    v_since := date_trunc('minute', now() - p_period);
    RETURN QUERY
    WITH per_minute AS (
        SELECT date_trunc('minute', e.occurred_at) AS minute,
               count(*) FILTER (WHERE e.from_status IS NULL) AS entered,
               count(*) FILTER (WHERE e.from_status IS NOT NULL) AS ended
          FROM docstatus.status_events e
         -- occurred_at bounds the read to the partitions and BRIN ranges of the period.
         WHERE e.occurred_at >= v_since
           AND e.kind = 'text_extraction'
           AND (e.from_status IS NULL
                OR e.to_status IN (SELECT s.text_extraction_status FROM docstatus.document_states s WHERE s.final))
         GROUP BY 1)
    SELECT m.minute, coalesce(p.entered, 0)::bigint, coalesce(p.ended, 0)::bigint
      FROM generate_series(v_since, date_trunc('minute', now()), interval '1 minute') AS m (minute)
      LEFT JOIN per_minute p USING (minute)
     ORDER BY m.minute;
END;
$$;
COMMENT ON FUNCTION docstatus.documents_per_minute IS
    'Per minute of the last p_period (1 minute to 1 day; default an hour), documents registered '
    '(entered) and documents that reached a final state of document_states (ended), from '
    'status_events; every minute has a row, zeros included. DS003 for a p_period out of range.';

------------------------------------------------------------------------------------------------
-- Operator actions
------------------------------------------------------------------------------------------------

CREATE FUNCTION docstatus.retry_failed_documents(p_error_pattern text)
RETURNS SETOF docstatus.extraction_jobs
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document_id bigint;
BEGIN
    IF p_error_pattern IS NULL OR p_error_pattern = '' THEN
        RAISE EXCEPTION 'an error pattern is needed (as failure_summary.error_pattern spells it)'
            USING ERRCODE = 'DS003', DETAIL = json_build_object('error_pattern', p_error_pattern)::text;
    END IF;
    -- The failed documents whose latest job failed with this pattern; the failed-jobs index
    -- (extraction_jobs_failed) keeps this a read of failed jobs only.
    FOR v_document_id IN
        SELECT j.document_id
          FROM docstatus.extraction_jobs j
          JOIN docstatus.documents d ON d.id = j.document_id
         WHERE j.status = 'failed' AND d.text_extraction_status = 'failed'
           AND docstatus.normalise_error(j.error_message) = p_error_pattern
           AND j.attempt = (SELECT max(l.attempt) FROM docstatus.extraction_jobs l WHERE l.document_id = j.document_id)
         ORDER BY j.document_id
    LOOP
        RETURN NEXT docstatus.retry_document(v_document_id);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION docstatus.retry_failed_documents IS
    'retry_document for every failed document whose latest job failed with this error pattern '
    '(normalise_error, as failure_summary groups them), in document order; returns the new jobs. '
    'All or nothing: a document another session moves meanwhile makes retry_document raise DS001 '
    'and nothing is retried. DS003 for an empty pattern.';

------------------------------------------------------------------------------------------------
-- Roles and grants
------------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_operator') THEN
        CREATE ROLE docstatus_operator NOLOGIN;
    END IF;
    IF NOT pg_has_role('docstatus_operator', 'docstatus_reader', 'MEMBER') THEN
        GRANT docstatus_reader TO docstatus_operator;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA docstatus TO docstatus_operator;

-- docstatus_operator: the dashboard's actions (and `docstatus retry` / `reap`).
GRANT EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text, text, bigint),
                          docstatus.retry_document(bigint, text),
                          docstatus.retry_failed_documents(text),
                          docstatus.reap_expired_jobs() TO docstatus_operator;

REVOKE ALL ON FUNCTION docstatus.list_documents(text, text, text, text, timestamptz, timestamptz,
                                                timestamptz, timestamptz, bigint, integer),
                       docstatus.documents_per_minute(interval),
                       docstatus.retry_failed_documents(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docstatus.list_documents(text, text, text, text, timestamptz, timestamptz,
                                                   timestamptz, timestamptz, bigint, integer),
                          docstatus.documents_per_minute(interval) TO docstatus_reader;

-- The new functions run as docstatus_owner like the rest (0008), where the installer may hand
-- them over: it is a member of that role (0008 made it one, or an administrator did).
DO $$
DECLARE
    v_function regprocedure;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'docstatus_owner')
       OR NOT pg_has_role('docstatus_owner', 'MEMBER') THEN
        RETURN;
    END IF;
    -- A new owner needs CREATE on the schema (a superuser installer skips that check): only
    -- for the hand-over.
    GRANT CREATE ON SCHEMA docstatus TO docstatus_owner;
    FOREACH v_function IN ARRAY ARRAY[
        'docstatus.list_documents(text, text, text, text, timestamptz, timestamptz, timestamptz, timestamptz, bigint, integer)',
        'docstatus.documents_per_minute(interval)',
        'docstatus.retry_failed_documents(text)']::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO docstatus_owner', v_function);
    END LOOP;
    REVOKE CREATE ON SCHEMA docstatus FROM docstatus_owner;
END;
$$;
