"""`invedge train`: TrainConfig's fields as flags, one call to invspread_edge.training.train, its
result printed.

The flags are built from the fields (`config.option`: help, short form, range), so a new setting
is a new field and nothing here; this module adds only the verb's own options (--resume, --no-flip,
--overwrite, --quiet).
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import typer

from invspread_edge.augment_spec import with_no_flip
from invspread_edge.config import TrainConfig
from invspread_edge_runtime.bounds import helped

DEFAULTS = TrainConfig()  # the library's defaults (a flag left out keeps them)

HELP = """Train an encoder without labels (Invariant and Spreading Instance Feature, Ye et al. 2019).

Examples:
  invedge train --data fashion-mnist --epochs 20 --out runs/fmnist
  invedge train --data ./my_images --image-size 64 --epochs 50 --out runs/mine
  invedge train --data ./parts --preset grayscale
  invedge train --data ./photos --aug 'crop=0.35-1,flip=0,jitter=0.2,gray=0.1,blur=0.5'
  invedge train --data ./new_site --init runs/fmnist
  invedge train --data ./photos --arch resnet50 --init resnet50.safetensors
  invedge train --resume runs/fmnist
  torchrun --nproc-per-node 4 --no-python invedge train --data cifar10:~/data --out runs/c10
"""


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP)(train_cmd)


def train_cmd(
    *,
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this folder exactly where it stopped."
    ),
    no_flip: bool = typer.Option(False, "--no-flip", help="No horizontal flip (same as --aug flip=0)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **flags: Any,
) -> None:
    """`flags`: one value per TrainConfig flag, None where it was left out."""
    from invspread_edge.training import train

    from .train_console import TrainConsole, print_result

    given = {name: value for name, value in flags.items() if value is not None}
    if (aug := with_no_flip(given.pop("aug", None), no_flip)) is not None:
        given["aug"] = aug
    if resume is not None:
        cfg, epochs = _resumed(resume, given), given.get("epochs")
        result = train(cfg, resume=True, epochs=epochs, show_progress=not quiet, events=TrainConsole())
    else:
        result = train(_new_run(given), overwrite=overwrite, show_progress=not quiet, events=TrainConsole())
    print_result(result)
    if result.interrupted:
        raise typer.Exit(130)


def _resumed(run: Path, given: dict[str, Any]) -> TrainConfig:
    """A resume continues with the run's own settings: only --epochs may be given."""
    from invspread_edge_runtime.errors import InvedgeError

    others = sorted(name for name in given if name not in ("epochs", "out"))
    if "out" in given:
        others.append("out")  # the settings by name, then where the run would go
    if others:
        raise InvedgeError(
            f"--resume continues with the run's own settings; {', '.join(map(_flag, others))} cannot change",
            "Only --epochs may be given with --resume",
        )
    return TrainConfig(out=str(run))


def _new_run(given: dict[str, Any]) -> TrainConfig:
    """The flags given over the defaults; --out defaults to runs/<data name>, and an --init run's
    architecture fills the architecture flags left out."""
    out = (
        Path(given["out"])
        if "out" in given
        else Path("runs") / _default_name(given.get("data", DEFAULTS.data))
    )
    if "init" in given:
        given = {**_init_architecture(given["init"], given), **given}
    return TrainConfig(**{**given, "out": str(out)})


def _init_architecture(init: str, given: dict) -> dict:
    """An --init run's arch, width and embedding size, for the flags not given (fine-tuning a run
    of ours needs no --arch); {} for foreign state dicts, which fit --arch's model or fail."""
    from invspread_edge.init_weights import init_architecture

    if not Path(init).expanduser().exists():
        return {}  # the run's checks say so in one line
    arch = init_architecture(init) or {}
    return {k: v for k, v in arch.items() if k not in given}


def _default_name(data: str) -> str:
    kind, _, path = data.partition(":")
    name = Path(path or data).expanduser().name if (path or "/" in data or data.startswith(".")) else data
    return (kind + "-" + name if path else name) or "train"


# --- the flags, from TrainConfig's fields --------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_option(f: Field, annotation: Any) -> inspect.Parameter:
    """The typer option of one `config.option` field. Its default is None (left out: the library's
    default, or the run's own with --resume); the help names the default it stands for."""
    if "help" not in f.metadata:
        raise TypeError(
            f"TrainConfig.{f.name}: declare it with config.option(...) or config.python_only(...)"
        )
    flag = _flag(f.name)
    kind = next((t for t in typing.get_args(annotation) if t is not type(None)), annotation)  # int | None
    decls = [f"{flag}/--no-{flag[2:]}" if kind is bool and f.default is True else flag]
    if f.metadata["short"]:
        decls.append(f.metadata["short"])
    option = typer.Option(None, *decls, help=_help(f), show_default=False, metavar=f.metadata["metavar"])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)


def _help(f: Field) -> str:
    """The field's help, its range ('[1 ≤ x ≤ 256]') and its default ('[default: 64]')."""
    bound, text = f.metadata["bound"], f.metadata["help"]
    text = helped(text, bound) if bound is not None else text
    default = _shown_default(f)
    return f"{text} [default: {default}]" if default is not None else text


def _shown_default(f: Field) -> str | None:
    """What --help names as the default: None where there is none to name (a flag that is off, no
    value) or where the help says it."""
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    if f.default is True:
        return _flag(f.name)[2:]  # the pair --detach-keys/--no-detach-keys: detach-keys
    return None if f.default in (None, "") or f.default is False else str(f.default)


# where --help lists the verb's own options: after the flag named here, else last
OWN_AFTER = {"resume": "out", "no_flip": "aug"}


def _with_field_options(command: Any) -> Any:
    """`command` (keyword-only options, then **flags) with one option per TrainConfig flag, in
    the fields' order, and its own placed by OWN_AFTER: typer reads the signature."""
    hints = typing.get_type_hints(TrainConfig)
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    params: list[inspect.Parameter] = []
    for f in fields(TrainConfig):
        if f.metadata.get("flag", True):
            params.append(_field_option(f, hints[f.name]))
            params.extend(p for p in own if OWN_AFTER.get(p.name) == f.name)
    command.__signature__ = inspect.Signature([*params, *(p for p in own if p not in params)])
    return command


train_cmd = _with_field_options(train_cmd)
