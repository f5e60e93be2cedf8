-- Client.claim_jobs. Columns of docstatus.claimed_job, in models.ClaimedJob field order.
SELECT *
  FROM docstatus.claim_jobs(p_worker_id => %(worker_id)s, p_lease => %(lease)s, p_limit => %(limit)s,
                            p_start_ocr => %(start_ocr)s)
