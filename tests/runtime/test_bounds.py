"""Every number a verb takes has a stated range: the one check (`bounds.Bound`) and its help text."""

from __future__ import annotations

import re

import pytest

from invspread_edge_runtime import bounds
from invspread_edge_runtime.bounds import Bound
from invspread_edge_runtime.errors import ConfigError

SIZE = Bound("--image-size", 8, 1024)


@pytest.mark.parametrize(
    ("bound", "value", "message"),
    [
        (SIZE, 100_000, "--image-size 100000 is out of range. Use 8 to 1024"),
        (SIZE, 7, "--image-size 7 is out of range. Use 8 to 1024"),
        (SIZE, 10**400, f"--image-size {10**400} is out of range"),  # past any float: no OverflowError
        (SIZE, float("nan"), "--image-size nan is not a number. Use 8 to 1024"),
        (bounds.THREADS, -1, "--threads -1 is out of range. Use 0 to 1024 (0: all cores)"),
        (bounds.BENCH_SECONDS, 0.0, "--seconds 0 is out of range. Use a number above 0 and at most 3600"),
        (bounds.BENCH_SECONDS, float("inf"), "--seconds inf is out of range"),
        (bounds.MAX_UPLOAD_MB, 1e308, "--max-upload-mb 1e+308 is out of range"),
    ],
)
def test_a_value_out_of_range_is_one_line_giving_the_range(bound, value, message):
    with pytest.raises(ConfigError) as info:
        bound.check(value)
    assert str(info.value) == message or str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("bound", "value"), [(SIZE, 8), (SIZE, 1024), (bounds.THREADS, 0), (bounds.BENCH_SECONDS, 3600.0)]
)
def test_the_ends_of_a_range_are_allowed(bound, value):
    bound.check(value)


def test_help_shows_the_range():
    assert SIZE.help == "[8 ≤ x ≤ 1024]"
    assert bounds.MAX_WAIT_MS.help == "[0 < x ≤ 1000]"
    assert bounds.helped("Threads.", bounds.THREADS) == "Threads. [0 ≤ x ≤ 1024]"


def _numeric_options():
    """(verb, flag, help) of every int or float option of every installed verb."""
    import typer

    from invspread_edge_runtime.cli import create_app

    found = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in getattr(command, "params", []):
            annotation = param.type_descriptor.annotation
            if annotation in (int, float, int | None, float | None):
                found.append((" ".join(path), param.opts[0], param.help or ""))

    walk(typer.main.get_command(create_app()), [])
    return found


def test_every_number_a_verb_takes_shows_its_range_in_help():
    options = _numeric_options()
    assert len(options) > 25  # the runtime's verbs alone have 30
    missing = [
        f"{verb} {flag}" for verb, flag, text in options if not re.search(r"\[\S+ [≤<] x ≤ \S+\]", text)
    ]
    assert not missing, f"no range in --help: {missing}"
