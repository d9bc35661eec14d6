"""Progress reporting: a tqdm bar for people, or one JSON object per line for programs (the QGIS plugin)."""

from __future__ import annotations

import json
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: How progress is shown: ``bar`` (tqdm on stderr), ``json`` (lines on stdout) or ``none``.
MODES = ("bar", "json", "none")


class JsonProgress:
    """Iterates like tqdm and prints ``{"stage", "done", "total", "percent", "rate", "eta_s"}`` lines."""

    def __init__(self, iterable: Iterable[T], total: int, desc: str, unit: str, interval: float = 0.5) -> None:
        self.iterable, self.total, self.desc, self.unit, self.interval = iterable, total, desc, unit, interval
        self.postfix: dict = {}

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def _emit(self, done: int, start: float) -> None:
        elapsed = max(time.perf_counter() - start, 1e-9)
        rate = done / elapsed
        record = {"stage": self.desc, "done": done, "total": self.total, "percent": round(100 * done / max(self.total, 1), 1),
                  "rate": round(rate, 3), "unit": self.unit, "eta_s": round((self.total - done) / rate, 1) if rate > 0 else None}
        record.update(self.postfix)
        print(json.dumps(record), file=sys.stdout, flush=True)

    def __iter__(self) -> Iterator[T]:
        start = last = time.perf_counter()
        done = 0
        for item in self.iterable:
            yield item
            done += 1
            now = time.perf_counter()
            if now - last >= self.interval or done == self.total:
                self._emit(done, start)
                last = now


def progress(iterable: Iterable[T], total: int, desc: str, unit: str, mode: str = "bar"):
    """Wrap ``iterable`` in the progress display ``mode`` asks for."""
    if mode == "json":
        return JsonProgress(iterable, total, desc, unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=mode == "none", file=sys.stderr, dynamic_ncols=True)
