"""The one exception type for problems a user can fix."""


class KaggleTLError(Exception):
    """A user-facing problem: the message names the file/row and says what to do.

    `kaggle-tl` and `run_all.py` print it on one line and exit non-zero; any other
    exception reaching the user is a bug in kaggle_tl.
    """
