"""mkdocs hooks: the reference pages are generated from the code, so they cannot drift.

`{{ cli_reference }}` in a page becomes every `ffjord` command with every option, read
from the command line's own parser; `{{ api_reference }}` becomes one mkdocstrings entry
per name of `ffjord.__all__` and of the public modules; `{{ error_messages }}` becomes
every error message the package can raise, read from its source.
"""

import argparse
import ast
from pathlib import Path

import ffjord
from ffjord import cli, datasets, figures, plotting, sbi, simulators

MODULES = {
    "ffjord.datasets": datasets,
    "ffjord.simulators": simulators,
    "ffjord.plotting": plotting,
    "ffjord.figures": figures,
    "ffjord.sbi": sbi,
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | meaning |", "|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.metavar and action.option_strings:
            names += f" `{action.metavar}`"
        elif action.choices and action.option_strings:
            names += " `" + "|".join(str(c) for c in action.choices) + "`"
        meaning = (action.help or "").replace("%%", "%")  # argparse's escape
        default = action.default
        if default not in (None, False, argparse.SUPPRESS) and "default" not in meaning:
            meaning += f" (default `{default}`)"
        rows.append(f"| {names} | {_cell(meaning)} |")
    return rows


def cli_reference() -> str:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    lines = []
    for name, command in sub.choices.items():
        lines += [f"## `ffjord {name}`", "", helps.get(name, "") + ".", ""]
        lines += ["```text", command.format_usage().strip(), "```", ""]
        lines += _option_rows(command) + [""]
    return "\n".join(lines)


def api_reference() -> str:
    blocks = ["## `ffjord`"]
    blocks += [f"::: ffjord.{name}" for name in sorted(ffjord.__all__, key=str.lower)]
    for module_name, module in MODULES.items():
        blocks.append(f"## `{module_name}`")
        blocks.append(f"::: {module_name}\n    options:\n      members: false")
        blocks += [f"::: {module_name}.{name}" for name in module.__all__]
    return "\n\n".join(blocks)


ERRORS = ("InputError", "TrainingDiverged", "ValueError", "TypeError")


def _template(node: ast.expr) -> str | None:
    """The text of a message, with `...` where a value is filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "..." for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.IfExp):
        first, second = _template(node.body), _template(node.orelse)
        return " / ".join(t for t in (first, second) if t)
    return None


def error_messages() -> str:
    source = Path(ffjord.__file__).parent
    lines = []
    for path in sorted(source.glob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.exc if isinstance(node, ast.Raise) else None
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) in ERRORS):
                continue
            text = _template(call.args[0]) if call.args else None
            if text:
                found.append((node.lineno, call.func.id, " ".join(text.split())))
        if found:
            lines += [f"### `{path.name}`", "", "| error | message |", "|---|---|"]
            lines += [f"| `{kind}` | {_cell(text)} |" for _, kind, text in sorted(found)]
            lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "{{ cli_reference }}" in markdown:
        markdown = markdown.replace("{{ cli_reference }}", cli_reference())
    if "{{ error_messages }}" in markdown:
        markdown = markdown.replace("{{ error_messages }}", error_messages())
    if "{{ api_reference }}" in markdown:
        markdown = markdown.replace("{{ api_reference }}", api_reference())
    return markdown
