"""One exception type for every mistake a user can make.

The CLI turns a `CnnzooError` into one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.
"""


class CnnzooError(Exception):
    """Bad input from the user: an unknown name, a wrong size, a corrupt file..."""

    exit_status = 2  # the CLI's; a subclass for a failure that is not the input's says otherwise


def unknown_name(kind: str, name: str, known, otherwise: str) -> CnnzooError:
    """The error for a name no registry holds, suggesting the closest known names (or `otherwise`)."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else f" ({otherwise})"
    return CnnzooError(f"unknown {kind} {name!r}{hint}")
