-- The claim and its document in one round trip. j.* and d.* are the columns of extraction_jobs
-- and documents in table order, which models.ExtractionJob and models.Document mirror field for
-- field (tests/client/test_drift.py holds them to it).
SELECT j.*, d.*
  FROM docstatus.claim_extraction_job(p_worker_id => %(worker_id)s, p_lease => %(lease)s) AS j
  JOIN docstatus.documents d ON d.id = j.document_id
