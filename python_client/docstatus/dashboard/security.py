"""Who may act, and what the browser is told to refuse.

Actions are off unless the dashboard runs with ``--allow-actions`` and a token. An operator
signs in with the token once; the session lives in a cookie (HttpOnly, SameSite=Strict) that
names a random session id kept in this process only. Each action is a POST that must carry
the session's CSRF token (an HMAC of the session id) and come from this origin (the Origin
header, or Referer when a browser sends no Origin). Anything else: 403, nothing done.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "docstatus_session"

# No inline script or style, nothing from elsewhere: a filename that smuggled markup past the
# escaping still could not run. Inline SVG uses presentation attributes, not style=.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Forbidden(Exception):
    """An action request that is not allowed; the message says why (shown to the caller)."""


class Sessions:
    """Signed-in operators of this process: random session ids and their CSRF tokens."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._secret = secrets.token_bytes(32)
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def sign_in(self, offered: str) -> str | None:
        """A new session id when ``offered`` is the token, else None."""
        if not self._token or not hmac.compare_digest(offered.encode(), self._token.encode()):
            return None
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._ids.add(session_id)
        return session_id

    def valid(self, session_id: str | None) -> bool:
        with self._lock:
            return session_id is not None and session_id in self._ids

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def check_action(self, request: Request, csrf: str | None) -> None:
        """Raises Forbidden unless the request is a same-origin POST of a signed-in session
        carrying its CSRF token."""
        if not same_origin(request):
            raise Forbidden("cross-origin request refused")
        session_id = request.cookies.get(SESSION_COOKIE)
        if not self.valid(session_id):
            raise Forbidden("sign in with the action token first")
        if not csrf or not hmac.compare_digest(csrf, self.csrf_token(session_id)):  # type: ignore[arg-type]
            raise Forbidden("missing or wrong CSRF token")


def same_origin(request: Request) -> bool:
    """The Origin (or, without one, the Referer) names this server as the browser reached it."""
    host = request.headers.get("host")
    source = request.headers.get("origin") or request.headers.get("referer")
    if not host or not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc == host and parts.scheme == request.url.scheme


class SecurityHeaders:
    """Adds the CSP and its companions to every response; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                headers["X-Frame-Options"] = "DENY"
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)
