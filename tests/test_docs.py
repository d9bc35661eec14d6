"""The commands printed in the README and docs/ still run: every option they pass exists in today's commands."""

import re
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {e.name: e for e in entry_points(group="console_scripts") if e.name.startswith("mamol-")}  # pyproject's [project.scripts]
MODULES = {f"-m {e.module}": name for name, e in COMMANDS.items()}  # torchrun ... -m mamol_cli.train
CALL = re.compile(rf"(\b(?:{'|'.join(map(re.escape, COMMANDS))})|{'|'.join(map(re.escape, MODULES))}|\bpython scripts/[\w.]+\.py)\b([^`\n]*)")


def documented_calls() -> list[tuple[str, str, list[str]]]:
    """``(document, program, words after it)`` for each command line in the docs (continued lines joined)."""
    calls = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        calls += [(doc.name, MODULES.get(m.group(1), m.group(1)), m.group(2).split()) for m in CALL.finditer(text)]
    return calls


def flags(words: list[str]) -> list[str]:
    """The long options among ``words``, without ``=VALUE`` and trailing punctuation."""
    return [w.split("=")[0].rstrip(",.;:)`]") for w in words if w.startswith("--")]


def click_options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def test_docs_name_commands():
    programs = {program for _, program, _ in documented_calls()}
    assert set(COMMANDS) <= programs and any(p.startswith("python scripts/") for p in programs)


@pytest.mark.parametrize("doc,program,words", documented_calls(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_documented_options_exist(doc, program, words):
    if program.startswith("python "):
        script = ROOT / program.split()[1]
        assert script.is_file(), f"{doc} runs {program}, which is not in the repository"
        source = script.read_text(encoding="utf-8")
        unknown = [f for f in flags(words) if f != "--help" and f'"{f}"' not in source]
    else:
        command = COMMANDS[program].load()
        if isinstance(command, click.Group):
            if not flags(words):
                return  # the group named in prose ("mamol-bench has three commands")
            assert words[0] in command.commands, f"{doc}: {program} has no command {words[0]!r}"
            command = command.commands[words[0]]
        unknown = [f for f in flags(words) if f not in click_options(command)]
    assert not unknown, f"{doc}: {program} {' '.join(words)[:120]} passes options it does not have: {unknown}"
