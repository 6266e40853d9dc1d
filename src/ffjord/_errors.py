"""The one exception type for bad user input.

Every check on what a user gives us (arrays, files, options) raises
[`InputError`][], a `ValueError` whose message is one line naming the problem
and what to do. The command line prints that line and exits non-zero.
"""

import re
from collections.abc import Callable


class InputError(ValueError):
    """Bad input from the user: the message is one line that names the problem.

    `parameters` lists the Python parameters the message names, as it spells them
    (`"epochs"`, `"resume=True"`); the command line shows them as its flags
    (`spelled`), so one check serves both.

    Example:
        >>> err = InputError("epochs must be a positive integer, got 0", parameters=("epochs",))
        >>> str(err), err.spelled(lambda name: "--" + name)
        ('epochs must be a positive integer, got 0', '--epochs must be a positive integer, got 0')
    """

    def __init__(self, message: str, *, parameters: tuple[str, ...] = ()):
        super().__init__(message)
        self.parameters = parameters

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with every mention of its parameters renamed by `spell`."""
        text = str(self)
        for parameter in self.parameters:
            pattern = rf"(?<![\w-]){re.escape(parameter)}(?![\w=])"
            text = re.sub(pattern, lambda _, p=parameter: spell(p), text)
        return text
