-- Client.heartbeat_job.
SELECT docstatus.heartbeat_job(p_job_id => %(job_id)s, p_worker_id => %(worker_id)s, p_lease => %(lease)s)
