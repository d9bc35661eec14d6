"""User-facing errors: one line that names the offending file and the fix; Ctrl-C and SIGTERM."""

import contextlib
import signal
import threading
from typing import Iterator

#: The signals that mean Ctrl-C: SIGINT, and on Windows SIGBREAK (what a stop button sends a process group there).
CTRL_C_SIGNALS = (signal.SIGINT, *((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()))


class MamolError(Exception):
    """An input problem the user can fix; the CLI prints its message as one line and exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, a batch scheduler, a container stop), raised where Ctrl-C would be so
    the same clean-up runs: half-written outputs are deleted, finished ones kept."""


class PeerStopped(MamolError):
    """This rank stops because another torchrun rank failed; that rank prints the one message, so
    the CLI exits 1 without printing this one."""


@contextlib.contextmanager
def deferred_interruptions(active: bool) -> Iterator[list[BaseException]]:
    """While ``active`` (and on the main thread), Ctrl-C and SIGTERM do not stop the code at once:
    they are recorded in the yielded list (as the exception each would raise) for the code to act
    on where it can stop cleanly (a training step's end); a second one raises at once."""
    caught: list[BaseException] = []
    if not active or threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def record(signum, frame) -> None:
        exception = KeyboardInterrupt() if signum in CTRL_C_SIGNALS else Terminated()
        if caught:  # a second signal: the step did not end (a hung rank?), stop now
            raise exception
        caught.append(exception)

    previous = {s: signal.signal(s, record) for s in (*CTRL_C_SIGNALS, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
