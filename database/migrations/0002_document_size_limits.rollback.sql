-- Back to 0001_core: validate_document without the size rules, settings without the limit.

DROP FUNCTION docstatus.validate_document(bigint, boolean, text, text);
CREATE FUNCTION docstatus.validate_document(
    p_document_id bigint, p_blob_retrievable boolean, p_mime_type text)
RETURNS docstatus.documents
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_document docstatus.documents;
    v_mime text := lower(nullif(btrim(p_mime_type), ''));
    v_had_job boolean;
    v_reason text;
BEGIN
    IF p_blob_retrievable IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('p_blob_retrievable must not be null');
    END IF;
    IF p_blob_retrievable AND v_mime IS NULL THEN
        PERFORM docstatus._raise_invalid_argument('a retrievable blob needs its detected MIME type');
    END IF;
    v_document := docstatus._lock_document(p_document_id);

    -- Only an uploaded document, or one that failed validation (it never had a job), is judged.
    IF v_document.text_extraction_status = 'failed' THEN
        v_had_job := EXISTS (SELECT FROM docstatus.extraction_jobs WHERE document_id = p_document_id);
        IF v_had_job THEN
            RETURN v_document;
        END IF;
    ELSIF v_document.text_extraction_status <> 'not ready' THEN
        RETURN v_document;
    END IF;

    IF NOT p_blob_retrievable THEN
        v_reason := 'blob not retrievable';
    ELSIF NOT EXISTS (SELECT FROM docstatus.allowed_mime_types WHERE mime_type = v_mime) THEN
        v_reason := format('MIME type %s is not allowed', v_mime);
        IF v_document.text_extraction_status = 'failed' THEN
            -- Rejected again for the same kind of reason: no round trip through 'not ready'.
            UPDATE docstatus.documents SET status_reason = v_reason, mime_type = v_mime
             WHERE id = p_document_id RETURNING * INTO v_document;
            RETURN v_document;
        END IF;
        UPDATE docstatus.documents
           SET text_extraction_status = 'failed', processing_status = 'failed',
               status_reason = v_reason, mime_type = v_mime
         WHERE id = p_document_id RETURNING * INTO v_document;
        RETURN v_document;
    END IF;

    -- Retrievable and allowed, or not retrievable: either way the document is (back) in 'not ready'.
    IF v_document.text_extraction_status = 'failed' OR v_reason IS NOT NULL THEN
        UPDATE docstatus.documents
           SET text_extraction_status = 'not ready', processing_status = 'pending extraction',
               status_reason = v_reason
         WHERE id = p_document_id RETURNING * INTO v_document;
    END IF;
    IF v_reason IS NOT NULL THEN
        RETURN v_document;
    END IF;

    UPDATE docstatus.documents
       SET text_extraction_status = 'ready', status_reason = NULL, mime_type = v_mime
     WHERE id = p_document_id RETURNING * INTO v_document;
    PERFORM docstatus._insert_job(p_document_id, NULL);
    RETURN v_document;
END;
$$;
COMMENT ON FUNCTION docstatus.validate_document IS
    'Promotes an uploaded document: retrievable and MIME allowed -> ''ready'' with one pending job; '
    'not retrievable -> stays ''not ready'' with status_reason (validate again later); MIME not '
    'allowed -> ''failed'' with the reason. Accepts a document that failed validation again. Any '
    'other document is returned unchanged.';
REVOKE ALL ON FUNCTION docstatus.validate_document(bigint, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION docstatus.validate_document(bigint, boolean, text) TO docstatus_dms;

ALTER TABLE docstatus.settings DROP COLUMN max_document_bytes;
COMMENT ON TABLE docstatus.settings IS
    'Configuration as data, one row. max_attempts: attempts before the reaper stops retrying; '
    'default_lease: lease given to a job that enters ocr running without a holder; '
    'notify_events: false sends only docstatus_alerts (history is written all the same).';
