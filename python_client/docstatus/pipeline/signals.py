"""SIGTERM and SIGINT stop the worker: the first gracefully, a second one at once.

Handlers only set flags (no I/O, no logging: a handler runs between two bytecodes of whatever
the main thread was doing); the worker's own threads do the rest.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT call ``request_stop(signal name)``. Only the main thread
    may install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        request_stop(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old_handler in previous.items():
            signal.signal(signum, old_handler)


__all__ = ["STOP_SIGNALS", "stop_on_signals"]
