-- Client.documents_per_minute: oldest minute first. Columns in models.DocumentsMinute field order.
SELECT minute, entered, ended FROM docstatus.documents_per_minute(p_period => %(period)s)
