"""docstatus: a thin Python client for the docstatus PostgreSQL schema."""

__version__ = "0.1.0"
