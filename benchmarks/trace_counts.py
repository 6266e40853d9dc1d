"""How often the engine's compiled functions are traced (the benchmarks report it).

`traces(cls, name)` wraps the method `name` of `cls` (e.g. `Trainer._epoch`) once in
`eqx.debug.assert_max_traces` without a limit, for every instance made afterwards, and
returns a function that reads the count so far (`eqx.debug.get_num_traces`): a script
reads it before and after the work it measures. Scripts import it by name (their own
folder is on `sys.path` when run as `python benchmarks/SCRIPT.py`).
"""

from collections.abc import Callable

import equinox as eqx

_counted: dict[tuple[type, str], Callable] = {}


def traces(cls: type, name: str) -> Callable[[], int]:
    """A reader of how many times `cls.name` has been traced since it was first wrapped."""
    if (cls, name) not in _counted:
        counted = eqx.debug.assert_max_traces(getattr(cls, name), max_traces=None)

        def method(self, *args, **kwargs):
            return counted(self, *args, **kwargs)

        setattr(cls, name, method)
        _counted[cls, name] = counted
    counted = _counted[cls, name]
    return lambda: eqx.debug.get_num_traces(counted)
