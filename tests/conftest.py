import atexit
import itertools
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)
# The CLI caches compiled programs; keep the tests' cache out of the user's home. One cache
# per test session (removed at exit), shared by its workers (they inherit this process'
# environment; sharing halves the suite's time), so no entry a killed earlier run left
# half-written is ever read.
if "FFJORD_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ffjord-tests-jax-cache-")
    os.environ["FFJORD_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


@pytest.fixture
def getkey():
    """A fresh, never-reused key on every call: `getkey()`."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


def run_settings(run_dir) -> dict:
    """A run's `ffjord train` settings (`ffjord._plan.settings_of`) with what its data
    show (`n_train`, `dim`, ...) and its standardisation (`standardize`), flat, for tests."""
    import json
    from pathlib import Path

    from ffjord._plan import settings_of

    config = json.loads((Path(run_dir) / "config.json").read_text())
    flat = {**config, **config["data"], **settings_of(config)}
    flat["data"] = config["data"]["name"]
    flat["objective_config"] = config["objective"]

    def affine(node):
        if node["type"] == "Affine":
            return {"shift": node["shift"], "scale": node["scale"]}
        for inner in node.get("bijectors", []) + ([node["bijector"]] if "bijector" in node else []):
            found = affine(inner)
            if found:
                return found
        return None

    flat["standardize"] = affine(config["model"]["bijector"])
    return flat


def checkpoint_state(run_dir):
    """The whole checkpoint (optimiser state included) of a run made by `ffjord train`."""
    from pathlib import Path

    from ffjord._plan import RunPlan, settings_of
    from ffjord._run import RunDir
    from ffjord._source import DataSource

    run = RunDir(Path(run_dir))
    config = run.require()
    cfg, source = settings_of(config), DataSource.from_config(config["data"])
    train, _ = source.load()
    plan = RunPlan.from_settings(cfg)
    return run, run.load_checkpoint(plan.trainer(source, train).init(plan.key))


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
