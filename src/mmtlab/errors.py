"""The errors a user can fix, as one family.

Every error that a person can act on (a bad option, a damaged or missing file, a full disk, a diverged run)
is a :class:`MmtlabError`; its message names the file or key and the way out. The ``mmtlab`` command prints
such an error as one line and exits 2; any other exception is a bug and keeps its traceback (exit 1).

The concrete classes live next to the code that raises them and (but for :class:`StorageError`) keep ``ValueError`` as a second base, so
``except ValueError`` in library code and tests goes on working: :class:`ConfigError` here (re-exported by
:mod:`mmtlab.config`),
:class:`mmtlab.data.store.DataError`, :class:`mmtlab.train.trainer.TrainingError`,
:class:`mmtlab.eval.metrics.EvalError`, and :class:`StorageError` here.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

# OSError numbers that say something about the machine (space, permissions), never about mmtlab's code
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class MmtlabError(Exception):
    """Base of every error a user can fix; the message names the file or key and what to do."""


class ConfigError(MmtlabError, ValueError):
    """A configuration key or value is invalid. The message names the key and the valid choices."""


class StorageError(MmtlabError):
    """A file could not be written (disk full, no permission, read-only file system)."""


@contextlib.contextmanager
def writing(path: str | Path, way_out: str) -> Iterator[None]:
    """Turn an environment ``OSError`` (disk full, permissions) raised inside the block into a
    :class:`StorageError` naming ``path`` and ``way_out``; other ``OSError`` s (bugs) pass unchanged."""
    try:
        yield
    except OSError as e:
        if isinstance(e, MmtlabError) or e.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise StorageError(f"{path}: cannot write ({e.strerror}); {way_out}") from e


def user_fixable(e: BaseException) -> bool:
    """An error of the :class:`MmtlabError` family, or an ``OSError`` about the machine (disk full, no
    permission, read-only file system) rather than about mmtlab's code."""
    return isinstance(e, MmtlabError) or (isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS)


def one_line(e: BaseException) -> str:
    """The error's message on one line (a multi-line message from a library is joined)."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return text


__all__ = ["MmtlabError", "ConfigError", "StorageError", "ENVIRONMENT_ERRNOS", "writing", "user_fixable", "one_line"]
