-- Client.normalise_error.
SELECT docstatus.normalise_error(p_message => %(message)s)
