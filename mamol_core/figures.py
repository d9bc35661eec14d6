"""Drawing matplotlib pictures (quick-looks, confusion matrices, routing charts) with one line, instead of a
Python warning per character, where the font lacks characters of a class or sensor name."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Iterator

log = logging.getLogger(__name__)

_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")


@contextlib.contextmanager
def glyphs_told(what: str) -> Iterator[None]:
    """Around laying out and saving a picture called ``what``: the characters its font cannot draw (shown as
    boxes) are named in one warning; other warnings are shown as they would be without this."""
    show = warnings.showwarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=_MISSING_GLYPH.pattern)
        yield
    missing = []
    for warning in caught:
        match = _MISSING_GLYPH.search(str(warning.message))
        if match is None:
            show(warning.message, warning.category, warning.filename, warning.lineno, warning.file, warning.line)
        elif chr(int(match.group(1))) not in missing:
            missing.append(chr(int(match.group(1))))
    if missing:
        log.warning("%s: its font cannot draw %s, shown as boxes; the names stay whole in the rasters, styles and reports",
                    what, " ".join(missing[:8]) + (" …" if len(missing) > 8 else ""))
