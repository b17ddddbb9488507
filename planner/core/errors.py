"""The one user-facing error type.

Anything a user can fix (a path, a budget, a unit, a setting) raises :class:`SpecplanError` with
one line saying what is wrong, which input, and how to fix it. The CLI prints that line and exits
non-zero without a traceback; library users catch it like any exception.
"""


class SpecplanError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class BudgetError(SpecplanError):
    """A budget cannot fit the requested work (raised before any compute is spent)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; the message says what is kept and how to resume.

    A :class:`KeyboardInterrupt`, not a :class:`SpecplanError`: an interrupt is not a mistake
    (the CLI exits 130, not 2), and library callers that catch Ctrl-C still do.
    """
