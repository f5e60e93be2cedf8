"""What one dashboard process is configured with."""

from __future__ import annotations

from dataclasses import dataclass

# The action token comes from the environment only: a command line is visible to every user
# of the machine (ps), the environment of a process only to its owner.
TOKEN_ENV = "DOCSTATUS_DASHBOARD_TOKEN"

# A page asks docstatus.list_documents for page_size + 1 rows (the one more says whether there is
# a next page), and list_documents refuses a p_limit above 1000 (DS003).
MAX_PAGE_SIZE = 999


@dataclass(frozen=True)
class DashboardSettings:
    """``dsn``: the database, as a login role that is a member of docstatus_reader (read-only)
    or docstatus_operator (actions). ``action_token``: what an operator types to sign in for
    actions; actions are on only with ``allow_actions`` and a token. ``blob_connection_string``:
    the blob store, for extracted fields and "validate again" (the dms extra); None:
    $AZURE_STORAGE_CONNECTION_STRING, and without it no fields (validate again then tries
    Azurite's development account, as ``docstatus retry`` does)."""

    dsn: str = ""
    allow_actions: bool = False
    action_token: str | None = None
    blob_connection_string: str | None = None
    page_size: int = 50
    # The Subscriber's poll interval when notify_events is off, in seconds.
    poll_interval: float = 1.0
    # Seconds between keep-alive comments on an idle event stream (proxies close silent ones).
    keepalive: float = 15.0

    def __post_init__(self) -> None:
        if self.allow_actions and not self.action_token:
            raise ValueError("actions need a token: set the environment variable " + TOKEN_ENV)
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")

    @property
    def actions(self) -> bool:
        return self.allow_actions and bool(self.action_token)
