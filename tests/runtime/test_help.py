"""Every verb's --help reads like a plain CLI's: `MODEL IMAGES...`, `--batch N`, a bare `--overwrite`,
no typer type names (`<bool>`, `<list[Path]>`, `{model}`), and help text shown as written."""

from __future__ import annotations

import re

import pytest
import typer

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.version import __version__

# typer's own type names and its usage braces: what a plain help screen never shows
TYPE_NAMES = re.compile(r"<(bool|int|float|str|path|file|uuid|datetime)>|<list\[|<tuple\[|\{[a-z_]+\}")
# text rich would take for a style tag: "the [ray] extra", "[milvus]"
TAG_LIKE = re.compile(r"\[[a-z][a-z0-9_-]*\]")


def _verbs(command, path: list[str]):
    """(argv path, command) of the app and every command below it, sub-apps included."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _verbs(sub, [*path, name])


VERBS = list(_verbs(typer.main.get_command(create_app()), []))


def help_of(capsys, monkeypatch, *path: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert run(create_app(), [*path, "--help"]) == 0
    return capsys.readouterr().out


def _raw_texts(command) -> list[str]:
    """The help texts as the verb wrote them (the verb's own, and its parameters')."""
    texts = [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
    return [text.replace("\\[", "[") for text in texts]


def test_the_app_has_its_verbs_and_sub_verbs():
    names = {" ".join(path) for path, _ in VERBS}
    assert {"embed", "search", "index", "index build", "index add", "train", "export"} <= names


@pytest.mark.parametrize(("path", "command"), VERBS, ids=[" ".join(p) or "invedge" for p, _ in VERBS])
def test_help_shows_plain_metavars_and_the_text_as_written(capsys, monkeypatch, path, command):
    out = help_of(capsys, monkeypatch, *path)
    assert "Usage: invedge" in out
    shown = TYPE_NAMES.findall(out)
    assert not shown, f"invedge {' '.join(path)} --help shows typer's type names: {shown}"
    for tag in {tag for text in _raw_texts(command) for tag in TAG_LIKE.findall(text)}:
        assert tag in out, f"invedge {' '.join(path)} --help lost {tag!r} from its help text"


def test_embed_help_reads_like_the_anchors(capsys, monkeypatch):
    out = help_of(capsys, monkeypatch, "embed")
    assert "Usage: invedge embed [OPTIONS] MODEL IMAGES..." in out
    assert re.search(r"--batch\s+N\s+Images per inference call\..*\[default: 64\]", out)
    assert re.search(r"--out\s+-o\s+PATH\s", out)
    assert re.search(r"--overwrite\s+Replace", out)  # a flag takes no value: nothing between
    assert "Needs the [ray] extra." in out


def test_optional_and_explicit_arguments_in_usage(capsys, monkeypatch):
    assert "Usage: invedge search [OPTIONS] [INDEX] QUERY..." in help_of(capsys, monkeypatch, "search")
    info = help_of(capsys, monkeypatch, "index", "info")
    assert re.search(r"Usage: invedge index info \[OPTIONS\] \[INDEX\] *$", info, flags=re.MULTILINE)
    assert "Usage: invedge index build [OPTIONS] EMBEDDINGS" in help_of(capsys, monkeypatch, "index", "build")


def test_version_prints_the_version_and_exits_0(capsys):
    capsys.readouterr()
    assert run(create_app(), ["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"invedge {__version__}" and captured.err == ""


def test_the_root_help_lists_version(capsys, monkeypatch):
    assert re.search(r"--version\s+Show the version and exit\.", help_of(capsys, monkeypatch))
