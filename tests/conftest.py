import itertools
import os
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)
# The CLI caches compiled programs; keep the tests' cache out of the user's home.
os.environ.setdefault(
    "FFJORD_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ffjord-tests-jax-cache")
)


@pytest.fixture
def getkey():
    """A fresh, never-reused key on every call: `getkey()`."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture
def max_traces(monkeypatch):
    """`max_traces(cls, name, n)`: for this test, every instance's method `cls.name` is
    wrapped in `eqx.debug.assert_max_traces(max_traces=n)` (a compiled method traced more
    often raises); returns the wrapped function, for `eqx.debug.get_num_traces`."""
    import equinox as eqx

    def wrap(cls, name: str, n: int):
        counted = eqx.debug.assert_max_traces(getattr(cls, name), max_traces=n)

        def method(self, *args, **kwargs):
            return counted(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, method)
        return counted

    return wrap
