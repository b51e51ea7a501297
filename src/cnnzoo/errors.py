"""One exception type for every mistake a user can make.

The CLI turns a `CnnzooError` into one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.
"""


class CnnzooError(Exception):
    """Bad input from the user: an unknown name, a wrong size, a corrupt file..."""
