-- Client.next_job_due.
SELECT docstatus.next_job_due()
