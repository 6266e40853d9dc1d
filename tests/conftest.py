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
