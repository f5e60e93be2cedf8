"""One line for "a dependency could not be reached": the cause, and where, without secrets.

Every command and the worker word a connection failure the same way:

    cannot connect to PostgreSQL at postgresql://u@127.0.0.1:1/x: connection refused
    cannot reach the blob store at http://127.0.0.1:10000/devstoreaccount1: connection refused

psycopg, psycopg_pool and the Azure SDK each say it differently (libpq in two lines, the pool
as "pool initialization incomplete", Azure with a multi-line urllib3 chain); this module turns
each into its cause, with the DSN without its password and the blob endpoint without its key.
A leaf module: no click, no Azure import at module level.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo

__all__ = [
    "blob_endpoint", "blob_unreachable_message", "one_line", "password_of", "postgres_unreachable_message",
    "pg_cause", "redact_dsn", "blob_cause", "blob_unreachable_at", "service_endpoint",
]


def redact_dsn(dsn: str) -> str:
    """The DSN as a message may show it: the password (in the URL or as a parameter) left out."""
    if not dsn.strip():
        return "(empty DSN: libpq defaults, PGHOST etc.)"
    if dsn.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}@{hosts}"
        query = urlencode([(key, value) for key, value in parse_qsl(parts.query) if key != "password"])
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(a DSN libpq cannot parse)"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def password_of(dsn: str) -> str | None:
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


def one_line(text: str, secret: str | None = None) -> str:
    """A (libpq) message on one line, without the secret should it quote it."""
    line = " ".join(text.split())
    if secret:
        line = line.replace(secret, "***")
    return line


# libpq: 'connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server...'
_LIBPQ_FAILED = re.compile(r'connection to server (?:at|on) .*? failed: (?P<cause>[^\n]*)', re.IGNORECASE)


def pg_cause(exc: BaseException) -> str:
    """Why PostgreSQL could not be used, in a few words ('connection refused', 'timeout expired')."""
    text = str(exc)
    causes = [match["cause"].strip() for match in _LIBPQ_FAILED.finditer(text)]
    if causes:
        # libpq tries each address of a host; the last one's reason is the one that stuck.
        cause = causes[-1]
    else:
        cause = (text.strip().splitlines() or [type(exc).__name__])[0]
    cause = cause.rstrip(".")
    return (cause[:1].lower() + cause[1:]) if cause[:2] != cause[:2].upper() else cause


def postgres_unreachable_message(dsn: str, exc: BaseException) -> str:
    """``cannot connect to PostgreSQL at <dsn without password>: <cause>``."""
    return f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {one_line(pg_cause(exc), password_of(dsn))}"


def service_endpoint(url: str) -> str:
    """A blob service URL as a message may show it: without its query, where a SAS token lives."""
    return url.partition("?")[0].rstrip("/")


def blob_endpoint(connection_string: str) -> str:
    """The blob endpoint a connection string points at, never its key or SAS token."""
    fields = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    endpoint = fields.get("blobendpoint")
    if not endpoint:
        account = fields.get("accountname", "?")
        protocol = fields.get("defaultendpointsprotocol", "https")
        suffix = fields.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    return service_endpoint(endpoint)


_ERRNO_WORDS = (
    ("connection refused", "connection refused"),
    ("timed out", "timed out"),
    ("timeout", "timed out"),
    ("name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("connection reset", "connection reset"),
    ("remote end closed connection", "connection closed without an answer"),
    ("connection aborted", "connection closed without an answer"),
    ("network is unreachable", "network unreachable"),
    ("no route to host", "no route to host"),
)


def blob_cause(exc: BaseException) -> str:
    """Why the blob store could not be used, in a few words (never its raw XML)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    if isinstance(exc, ResourceNotFoundError):
        code = getattr(exc, "error_code", None)
        return "container not found" if code == "ContainerNotFound" else "blob not found"
    if isinstance(exc, HttpResponseError):
        status = getattr(exc, "status_code", None)
        code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or "error"
        return f"HTTP {status} {code}" if status else str(code)
    text = str(exc).lower()
    for needle, words in _ERRNO_WORDS:
        if needle in text:
            return words
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def blob_unreachable_at(endpoint: str, exc: BaseException) -> str:
    """``cannot reach the blob store at <endpoint>: <cause>``, for an endpoint already without
    its token (``service_endpoint``, ``blob_endpoint``)."""
    return f"cannot reach the blob store at {endpoint}: {blob_cause(exc)}"


def blob_unreachable_message(connection_string: str, exc: BaseException) -> str:
    """``cannot reach the blob store at <endpoint>: <cause>`` (no key, no token)."""
    return blob_unreachable_at(blob_endpoint(connection_string), exc)
