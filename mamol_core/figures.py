"""Saving matplotlib pictures (quick-looks, confusion matrices, routing charts) with one line, instead of a
Python warning per character, where the font lacks characters of a class or sensor name."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")


def save_figure(fig, path: Path, what: str, **options) -> None:
    """``fig.savefig(path, **options)``; characters the font cannot draw (shown as boxes) are named in one
    warning that calls the picture ``what``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(path, **options)
    missing = []
    for warning in caught:
        match = _MISSING_GLYPH.search(str(warning.message))
        if match is None:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif chr(int(match.group(1))) not in missing:
            missing.append(chr(int(match.group(1))))
    if missing:
        log.warning("%s: its font cannot draw %s, shown as boxes; the names stay whole in the rasters, styles and reports",
                    what, " ".join(missing[:8]) + (" …" if len(missing) > 8 else ""))
