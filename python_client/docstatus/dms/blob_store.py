"""How long a blob request may take, in one place, and the probe that says whether the store answers.

The Azure SDK's defaults suit a batch job, not a worker: no connect timeout worth the name, a
read timeout of minutes and a first retry after 15 s, so a store that is down held each
document 80-90 s. Here:

- ``connect``: seconds to open the TCP connection (a closed port fails at once anyway);
- ``read``: seconds a single read may wait for bytes (a store that accepts and never answers);
- ``per_mb``: seconds each MiB of a download may take on top of ``read``, the total deadline
  of a download being ``read + per_mb * size in MiB``.

``BlobTimeouts.from_env()`` reads ``DOCSTATUS_BLOB_CONNECT_TIMEOUT``, ``DOCSTATUS_BLOB_READ_TIMEOUT``
and ``DOCSTATUS_BLOB_SECONDS_PER_MB``; the commands' ``--blob-connect-timeout``,
``--blob-read-timeout`` and ``--blob-seconds-per-mb`` (``docstatus.options.blob_timeout_options``)
override them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from docstatus.connection_errors import blob_unreachable_message

CONNECT_TIMEOUT_ENV = "DOCSTATUS_BLOB_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "DOCSTATUS_BLOB_READ_TIMEOUT"
SECONDS_PER_MB_ENV = "DOCSTATUS_BLOB_SECONDS_PER_MB"

MiB = 1024 * 1024


class BlobDeadlineExceeded(TimeoutError):
    """A download took longer than its deadline (``read + per_mb * MiB``): worth another attempt."""


@dataclass(frozen=True)
class BlobTimeouts:
    connect: float = 3.0
    read: float = 10.0
    per_mb: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "per_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the blob {name} timeout must be positive, not {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, connect: float | None = None, read: float | None = None,
                 per_mb: float | None = None) -> BlobTimeouts:
        """The arguments given, else the environment, else the defaults."""
        default = cls()
        return cls(
            connect=connect if connect is not None else _env_float(CONNECT_TIMEOUT_ENV, default.connect),
            read=read if read is not None else _env_float(READ_TIMEOUT_ENV, default.read),
            per_mb=per_mb if per_mb is not None else _env_float(SECONDS_PER_MB_ENV, default.per_mb),
        )

    def deadline(self, size_bytes: int | None) -> float:
        """Seconds a whole download of ``size_bytes`` may take."""
        return self.read + self.per_mb * max(size_bytes or 0, 0) / MiB


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None


def service_client(connection_string: str, timeouts: BlobTimeouts | None = None, *,
                   retry_total: int = 2) -> BlobServiceClient:
    """A BlobServiceClient with bounded waits and quick retries (1 s, 2 s, ... not 15 s)."""
    timeouts = timeouts or BlobTimeouts.from_env()
    return BlobServiceClient.from_connection_string(
        connection_string,
        retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=retry_total,
                                      random_jitter_range=1),
        connection_timeout=timeouts.connect,
        read_timeout=timeouts.read,
    )


def probe(connection_string: str, timeouts: BlobTimeouts | None = None) -> str | None:
    """None when the blob store answers; else one line saying where and why (no key).

    One request, no retry, the connect timeout for the read too (the answer is tiny): a store
    that is down, or accepts and never answers, is told within about ``connect`` seconds.
    Any HTTP answer but a refusal of our credentials counts as "it answers".
    """
    timeouts = timeouts or BlobTimeouts.from_env()
    quick = BlobTimeouts(connect=timeouts.connect, read=timeouts.connect, per_mb=timeouts.per_mb)
    try:
        service = service_client(connection_string, quick, retry_total=0)
    except ValueError as exc:
        return f"invalid blob connection string: {exc}"
    try:
        with service:
            service.get_service_properties(timeout=max(1, int(timeouts.connect)))
    except ClientAuthenticationError as exc:
        return blob_unreachable_message(connection_string, exc) + " (check the account key)"
    except HttpResponseError as exc:
        if exc.status_code in (401, 403):
            return blob_unreachable_message(connection_string, exc) + " (check the account key)"
        return None
    except AzureError as exc:
        return blob_unreachable_message(connection_string, exc)
    except OSError as exc:  # pragma: no cover - the SDK wraps these, but a proxy may not
        return blob_unreachable_message(connection_string, exc)
    return None


__all__ = ["BlobDeadlineExceeded", "BlobTimeouts", "probe", "service_client"]
