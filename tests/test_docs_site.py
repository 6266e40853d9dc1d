"""The documentation site builds in strict mode, and its reference pages are complete."""

import argparse
import html.parser
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import ffjord
from ffjord import cli, datasets, plotting, sbi, simulators

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings_handlers.python")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert done.returncode == 0 and not warnings, done.stderr[-4000:]
    return out


def test_every_public_name_is_in_the_api_reference(site):
    page = (site / "api" / "index.html").read_text()
    names = [f"ffjord.{n}" for n in ffjord.__all__]
    for module in (datasets, plotting, sbi, simulators):
        names += [f"{module.__name__}.{n}" for n in module.__all__]
    missing = [n for n in names if f'id="{n}"' not in page]
    assert not missing


def test_every_command_line_option_is_in_the_cli_reference(site):
    page = (site / "cli" / "index.html").read_text()
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"ffjord {name}" in page
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"<code>{flag}</code>" in page, (name, flag)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.targets.append(value)


def test_every_internal_link_resolves(site):
    broken = []
    for page in site.rglob("*.html"):
        links = _Links()
        links.feed(page.read_text())
        for target in links.targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith(("#", "mailto:")):
                continue
            base = site if parts.path.startswith("/") else page.parent  # 404.html: absolute
            path = (base / unquote(parts.path).lstrip("/")).resolve()
            if path.is_dir():
                path = path / "index.html"
            if not path.exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert not broken, broken[:20]
