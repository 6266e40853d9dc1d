"""The one exception type for bad user input.

Every check on what a user gives us (arrays, files, options) raises
[`InputError`][], a `ValueError` whose message is one line naming the problem
and what to do. The command line prints that line and exits non-zero.
"""


class InputError(ValueError):
    """Bad input from the user: the message is one line that names the problem.

    Example:
        >>> raise InputError("--epochs must be a positive integer, got 0")
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: --epochs must be a positive integer, got 0
    """
