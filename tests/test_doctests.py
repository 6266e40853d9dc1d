"""The docstring examples run: every module's doctests pass, and no public example is skipped."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import tempfile
from collections.abc import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord

MODULES = ["ffjord"] + sorted(
    info.name for info in pkgutil.walk_packages(ffjord.__path__, prefix="ffjord.")
)
PUBLIC_MODULES = [
    "ffjord.datasets",
    "ffjord.figures",
    "ffjord.plotting",
    "ffjord.sbi",
    "ffjord.simulators",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _globs(module) -> dict:
    """The module's own names, plus the ones every example may use."""
    return {**vars(module), "jax": jax, "jnp": jnp, "np": np, "ffjord": ffjord, "eqx": eqx}


def _doctests(module) -> list[doctest.DocTest]:
    found = doctest.DocTestFinder().find(module, module.__name__, globs=_globs(module))
    return [t for t in found if t.examples]


def test_every_module_is_listed() -> None:
    expected = {"ffjord._bijector", "ffjord.datasets", "ffjord.plotting", "ffjord.cli"}
    assert expected | {"ffjord.sbi", "ffjord.sbi._diagnostics"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files the examples write (under `tempfile.mkdtemp()`) land in pytest's directory.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    failures = []
    for test in _doctests(module):
        out: list[str] = []
        runner = doctest.DocTestRunner(optionflags=FLAGS)
        result = runner.run(test, out=out.append, clear_globs=True)
        if result.failed:
            failures.append(
                f"{test.name}: {result.failed} of {result.attempted} failed\n" + "".join(out)
            )
    assert not failures, "\n".join(failures)


def _is_code(value: object) -> bool:
    """A method, property or nested class (not a plain value such as a field's default)."""
    return callable(value) or isinstance(value, property | classmethod | staticmethod)


def _public() -> Iterator[tuple[str, object]]:
    """Every public name (with its qualified name): the exports, their modules and methods."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        yield module_name, module
        for attr in module.__all__:
            if _is_code(getattr(module, attr)):
                yield f"{module_name}.{attr}", getattr(module, attr)
    yield "ffjord", ffjord
    for attr in ffjord.__all__:
        yield f"ffjord.{attr}", getattr(ffjord, attr)
    classes = [
        (f"{m}.{a}", getattr(importlib.import_module(m), a))
        for m in ["ffjord", *PUBLIC_MODULES]
        for a in importlib.import_module(m).__all__
    ]
    for qualname, cls in classes:
        if not inspect.isclass(cls):
            continue
        for klass in cls.__mro__:
            if not klass.__module__.startswith("ffjord"):
                continue
            for attr, value in vars(klass).items():
                if not attr.startswith("_") and _is_code(value):
                    yield f"{qualname}.{attr}", value


def test_public_names_are_found() -> None:
    names = {name for name, _ in _public()}
    assert {"ffjord.fit", "ffjord.FFJORD.forward", "ffjord.plotting.plot_density"} <= names


def test_no_public_example_is_skipped() -> None:
    skipped = sorted({name for name, obj in _public() if "+SKIP" in (inspect.getdoc(obj) or "")})
    assert not skipped, f"public docstrings with a skipped example: {skipped}"


def test_every_public_example_runs() -> None:
    """Each public docstring with an example is one the doctest runs collect."""
    collected = {
        test.docstring for name in MODULES for test in _doctests(importlib.import_module(name))
    }
    missing = sorted(
        {
            name
            for name, obj in _public()
            if ">>>" in (getattr(obj, "__doc__", None) or "")
            and getattr(obj, "__doc__", None) not in collected
        }
    )
    assert not missing, f"public examples that no doctest runs: {missing}"


def test_every_public_name_has_an_example():
    """Every public class and function shows how it is used (type aliases aside)."""
    import inspect

    import ffjord
    from ffjord import datasets, figures, plotting, sbi, simulators

    named = [(f"ffjord.{n}", getattr(ffjord, n)) for n in ffjord.__all__]
    for module in (datasets, figures, plotting, sbi, simulators):
        named += [(f"{module.__name__}.{n}", getattr(module, n)) for n in module.__all__]
    without = [
        name
        for name, obj in named
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and ">>>" not in (inspect.getdoc(obj) or "")
    ]
    assert not without
