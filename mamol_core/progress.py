"""Progress reporting: a tqdm bar for people, or one JSON object per line for programs (the QGIS plugin)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar, Union

from tqdm import tqdm

T = TypeVar("T")

#: How progress is shown: ``bar`` (tqdm on stderr), ``json`` (lines on stdout) or ``none``.
MODES = ("bar", "json", "none")

#: A mode name, or a function that receives each progress record (a dict) and may raise to stop the work.
Mode = Union[str, Callable[[dict], None]]


def print_json(record: dict) -> None:
    """Print ``record`` as one JSON line, with this process's ``pid`` (a caller that has to kill it
    finds its partial files by that number)."""
    print(json.dumps({**record, "pid": os.getpid()}), file=sys.stdout, flush=True)


class RecordProgress:
    """A tqdm-like counter that hands ``{"stage", "done", "total", "percent", "rate", "unit", "eta_s"}``
    records to ``sink`` at most every ``interval`` seconds and once at the end."""

    def __init__(self, total: int, desc: str, unit: str, sink: Callable[[dict], None], interval: float = 0.5) -> None:
        self.total, self.desc, self.unit, self.sink, self.interval = total, desc, unit, sink, interval
        self.done, self.postfix = 0, {}
        self.start = self.last = time.perf_counter()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            record = {"stage": self.desc, "done": self.done, "total": self.total,
                      "percent": round(100 * self.done / max(self.total, 1), 1), "rate": round(rate, 3), "unit": self.unit,
                      "eta_s": round((self.total - self.done) / rate, 1) if rate > 0 else None, **self.postfix}
            self.sink(record)

    def close(self) -> None:
        """Nothing to release; present so both kinds of counter are used alike."""


def counter(total: int, desc: str, unit: str, mode: Mode = "bar"):
    """A progress counter with ``update(n)``, ``set_postfix(**kv)`` and ``close()`` shown as ``mode``."""
    if callable(mode):
        return RecordProgress(total, desc, unit, mode)
    if mode == "json":
        return RecordProgress(total, desc, unit, print_json)
    return tqdm(total=total, desc=desc, unit=unit, disable=mode == "none", file=sys.stderr, dynamic_ncols=True)


class _Counted:
    def __init__(self, iterable: Iterable[T], bar) -> None:
        self.iterable, self.bar = iterable, bar

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(**values)

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self.iterable:
                yield item
                self.bar.update(1)
        finally:
            self.bar.close()


def progress(iterable: Iterable[T], total: int, desc: str, unit: str, mode: Mode = "bar") -> _Counted:
    """Wrap ``iterable`` so that each item advances a counter shown as ``mode`` asks."""
    return _Counted(iterable, counter(total, desc, unit, mode))
