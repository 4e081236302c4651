"""Helpers shared by the reliability tests: the CLI's one-line error, and a pickle payload that must never run."""

from __future__ import annotations


def one_line_error(capsys) -> str:
    """The CLI's error as captured: one line, ``mmtlab: error: ...``, no traceback."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmtlab: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


class Payload:
    """Unpickling this creates the file ``path``: a file that appears means a pickle payload ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
