"""How `--help` reads, for every verb at once: `MODEL`, `IMAGES...`, `--batch N`, a bare `--overwrite`.

typer shows its own type names (`<bool>`, `<list[Path]>`, `{model}`) and reads help text as rich
markup (so "the [ray] extra" loses its "[ray]"). `HelpGroup` is the root group's class: once typer
has built every verb (sub-apps and verbs added by other packages included), it gives each parameter
a plain metavar and escapes the help text, so the screens read as the text was written.
"""

from __future__ import annotations

import types
from pathlib import PurePath
from typing import Any, Union, get_args, get_origin

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup, TyperOption


class HelpGroup(TyperGroup):
    """The `invedge` group: every command below it shows plain metavars and literal help."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _make_plain(self, typer.Context(self, info_name=self.name, **self.context_settings))


class PlainArgument(TyperArgument):
    """A positional argument as click shows one: `MODEL`, `IMAGES...`, `[RUN]`, and no type column."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        shown = self.metavar or self.name or ""
        # a metavar written with its brackets ("[INDEX] QUERY...") already shows what is optional
        return [shown if self.required or shown.startswith("[") else f"[{shown}]"]


def _make_plain(command: Any, ctx: typer.Context) -> None:
    """Plain metavars and literal help for `command` and everything below it (once per command)."""
    if getattr(command, "_invedge_plain_help", False):
        return
    command._invedge_plain_help = True
    for field in ("help", "short_help", "epilog"):
        setattr(command, field, _literal(getattr(command, field, None)))
    for param in command.get_params(ctx):  # with the --help option, made on first use
        param.help = _literal(param.help)
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "").upper() + ("..." if param.nargs != 1 else "")
            if type(param) is TyperArgument:  # typer builds its parameters itself: no class to pass it
                param.__class__ = PlainArgument
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = _value_metavar(param)
    for name, sub in getattr(command, "commands", {}).items():
        _make_plain(sub, typer.Context(sub, parent=ctx, info_name=name, **sub.context_settings))


def _literal(text: str | None) -> str | None:
    """Help text shown as written: "[ray]" stays, not a rich style tag."""
    return escape(text) if text else text


def _value_metavar(option: TyperOption) -> str:
    """An option's value in one word: none for a flag, N, X, PATH, [a|b], else the option's name."""
    if option.is_flag or option.count:
        return ""
    descriptor = option.type_descriptor
    if descriptor.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in descriptor.choices or ()) + "]"
    annotation = _bare(descriptor.annotation)
    if descriptor.is_path or (isinstance(annotation, type) and issubclass(annotation, PurePath)):
        return "PATH"
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return (option.name or "value").upper()


def _bare(annotation: Any) -> Any:
    """`int` for `int`, `int | None`, `list[int]` and `list[int] | None`."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _bare(kept[0]) if len(kept) == 1 else annotation
    if origin is list:
        (element,) = get_args(annotation) or (str,)
        return _bare(element)
    return annotation
