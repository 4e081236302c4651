"""Progress bars (tqdm): redrawn ten times a second on a terminal, every 30 s when stderr is a file or a pipe
(a cluster job's log, ``| tee``), so that logs hold a readable line per half-minute instead of thousands."""

from __future__ import annotations

import sys


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` with the redraw interval above (unless ``mininterval`` is given)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
    return tqdm(iterable, **kwargs)
