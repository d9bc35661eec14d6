"""Reading ahead: the next item is loaded in a background thread while the caller uses the current one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], load: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield ``(item, load(item))`` in order; ``load`` of the next item runs in one background
    thread while the caller works on the current one, so the caller never waits on it unless
    loading is the slower side. ``load`` is only ever called from that one thread, one item at a
    time, so it may use objects that are not thread-safe (GDAL datasets) as long as the caller
    does not touch them meanwhile. An exception in ``load`` is raised here, at its item; when the
    caller stops early (an error, Ctrl-C), the pending load is cancelled or waited for."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mamol-read") as pool:
        try:
            current = next(iterator)
        except StopIteration:
            return
        pending = pool.submit(load, current)
        try:
            for following in iterator:
                loaded = pending.result()
                pending = pool.submit(load, following)
                yield current, loaded
                current = following
            yield current, pending.result()
        finally:
            pending.cancel()
