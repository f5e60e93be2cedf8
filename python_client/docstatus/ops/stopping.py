"""Long-running commands (watch, metrics) stop on Ctrl-C or SIGTERM, cleanly, with exit status 0."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """``with stop_signals() as stop:`` ``stop`` is set by SIGINT (Ctrl-C) or SIGTERM.

    The signals only set the event, so no KeyboardInterrupt lands in the middle of a database
    call; announce readiness inside the block, so a signal sent after it is always caught. The
    previous handlers are put back on the way out.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
