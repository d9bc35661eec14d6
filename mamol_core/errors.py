"""User-facing errors: one line that names the offending file and the fix."""

import signal

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
