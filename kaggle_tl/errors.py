"""The one exception type for problems a user can fix, and the small helpers its messages use."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class KaggleTLError(Exception):
    """A user-facing problem: the message names the file/row and says what to do.

    `kaggle-tl` and `run_all.py` print it on one line and exit non-zero; any other
    exception reaching the user is a bug in kaggle_tl.
    """


def one_line(exc: BaseException) -> str:
    """Another library's whole message on one line, for a KaggleTLError: cutting it mid-sentence
    (or at its first line) hid the part that says why."""
    return " ".join(str(exc).split()) or type(exc).__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean heads?)' for the closest of ``choices``, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
