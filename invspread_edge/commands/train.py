"""`invedge train`: check flags, call invspread_edge.training.train, print what it returns."""

from __future__ import annotations

from pathlib import Path

import typer

from invspread_edge.augment_spec import KEYS, PRESETS
from invspread_edge.config import MAX_STEP_PIXELS, SCHEDULES, TRAIN_BOUNDS, TrainConfig
from invspread_edge_runtime.bounds import helped

DEFAULTS = TrainConfig()  # the library's defaults, shown in --help (a flag left out keeps them)


def _ranged(text: str, field: str) -> str:
    """Help text with the field's allowed range (config.TRAIN_BOUNDS, checked before any work)."""
    return helped(text, TRAIN_BOUNDS[field])


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
    @app.command("train", help=HELP)
    def train_cmd(
        data: str = typer.Option(
            None,
            "--data",
            "-d",
            help=f"{DEFAULTS.data} (default), cifar10:PATH, cifar100:PATH, stl10:PATH, or a folder.",
        ),
        out: Path = typer.Option(
            None, "--out", "-o", help="Run folder to create (default: runs/<data name>)."
        ),
        resume: Path = typer.Option(
            None, "--resume", help="Continue the run in this folder exactly where it stopped."
        ),
        epochs: int = typer.Option(
            None,
            "--epochs",
            help=_ranged(f"Epochs (default {DEFAULTS.epochs}); with --resume, train longer.", "epochs"),
        ),
        batch_size: int = typer.Option(
            None,
            "--batch-size",
            "-b",
            help=_ranged(
                f"Images per step per process (default {DEFAULTS.batch_size}; batch × image size² at "
                f"most {MAX_STEP_PIXELS:,}).",
                "batch_size",
            ),
        ),
        lr: float = typer.Option(
            None, "--lr", help=_ranged(f"Initial learning rate (default {DEFAULTS.lr}).", "lr")
        ),
        schedule: str = typer.Option(
            None,
            "--schedule",
            help=f"{SCHEDULES[0]} (the recipe's, default), {SCHEDULES[1]} or {SCHEDULES[2]}.",
        ),
        arch: str = typer.Option(
            None, "--arch", help=f"{DEFAULTS.arch} (default), cifar_resnet34, resnet18/34/50."
        ),
        width: int = typer.Option(
            None,
            "--width",
            help=_ranged(f"Channels of the first stage ({DEFAULTS.width}: the paper's; default).", "width"),
        ),
        embedding_dim: int = typer.Option(
            None,
            "--embedding-dim",
            help=_ranged(f"Embedding size (default {DEFAULTS.embedding_dim}).", "embedding_dim"),
        ),
        image_size: int = typer.Option(
            None,
            "--image-size",
            help=_ranged(
                "Training size (default: native; a folder's own size up to 64 px, else 64).", "image_size"
            ),
        ),
        preset: str = typer.Option(
            None,
            "--preset",
            help=f"Augmentation preset: {', '.join(PRESETS)} (default {DEFAULTS.preset}: the paper's).",
        ),
        aug: str = typer.Option(
            None,
            "--aug",
            help=f"Augmentation over the preset, key=value,... with keys {', '.join(KEYS)}.",
        ),
        no_flip: bool = typer.Option(False, "--no-flip", help="No horizontal flip (same as --aug flip=0)."),
        init: str = typer.Option(
            None,
            "--init",
            help="Start from these weights: a run folder, a checkpoint, or a state dict "
            "(.safetensors, weights-only .pth).",
        ),
        temperature: float = typer.Option(
            None,
            "--temperature",
            help=_ranged(f"Loss temperature T (default {DEFAULTS.temperature}).", "temperature"),
        ),
        detach_keys: bool = typer.Option(
            None,
            "--detach-keys/--no-detach-keys",
            help="Gradient through each similarity's row only, as the authors' code (default), or "
            "through both sides (--no-detach-keys, as SimCLR).",
        ),
        limit: int = typer.Option(
            None, "--limit", help=_ranged("Train on the first N images of a fixed shuffle.", "limit")
        ),
        classes: str = typer.Option(None, "--classes", help="Train on these classes only, e.g. 0-4."),
        seed: int = typer.Option(
            None, "--seed", help=_ranged(f"Random seed (default {DEFAULTS.seed}).", "seed")
        ),
        workers: int = typer.Option(
            None,
            "--workers",
            help=_ranged(f"Decoding processes for folders (default {DEFAULTS.workers}).", "workers"),
        ),
        precision: str = typer.Option(
            None, "--precision", help=f"{DEFAULTS.precision} (default), fp32, bf16 or fp16 (CUDA)."
        ),
        device: str = typer.Option(None, "--device", help=f"{DEFAULTS.device} (default), cpu or cuda."),
        eval_every: int = typer.Option(
            None,
            "--eval-every",
            help=_ranged(
                f"kNN accuracy every N epochs (default {DEFAULTS.eval_every}; 0: off).", "eval_every"
            ),
        ),
        eval_memory: int = typer.Option(
            None,
            "--eval-memory",
            help=_ranged(
                f"kNN monitor memory images (default {DEFAULTS.eval_memory}; 0: all).", "eval_memory"
            ),
        ),
        eval_queries: int = typer.Option(
            None,
            "--eval-queries",
            help=_ranged(
                f"kNN monitor query images (default {DEFAULTS.eval_queries}; 0: all).", "eval_queries"
            ),
        ),
        save_every_steps: int = typer.Option(
            None,
            "--save-every-steps",
            help=_ranged("Also checkpoint every N steps (0: off).", "save_every_steps"),
        ),
        sync_bn: bool = typer.Option(None, "--sync-bn", help="SyncBatchNorm across processes (torchrun)."),
        compile: bool = typer.Option(
            None, "--compile", help="torch.compile the model: faster steps after a minute of compiling."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        from invspread_edge_runtime.errors import InvedgeError

        given = {
            k: v
            for k, v in dict(
                data=data,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                schedule=schedule,
                arch=arch,
                width=width,
                embedding_dim=embedding_dim,
                image_size=image_size,
                preset=preset,
                aug=",".join(part for part in (aug, "flip=0" if no_flip else None) if part) or None,
                init=init,
                temperature=temperature,
                detach_keys=detach_keys,
                limit=limit,
                classes=classes,
                seed=seed,
                workers=workers,
                precision=precision,
                device=device,
                eval_every=eval_every,
                eval_memory=eval_memory,
                eval_queries=eval_queries,
                save_every_steps=save_every_steps,
                sync_bn=sync_bn,
                compile=compile,
            ).items()
            if v is not None
        }
        from invspread_edge.training import train

        from .train_console import TrainConsole, print_result

        if resume is not None:
            others = sorted(k for k in given if k != "epochs") + (["out"] if out is not None else [])
            if others:
                flags = ", ".join("--" + k.replace("_", "-") for k in others)
                raise InvedgeError(
                    f"--resume continues with the run's own settings; {flags} cannot change",
                    "Only --epochs may be given with --resume",
                )
            cfg = TrainConfig(out=str(resume))
            result = train(cfg, resume=True, epochs=epochs, show_progress=not quiet, events=TrainConsole())
        else:
            if out is None:
                out = Path("runs") / _default_name(given.get("data", DEFAULTS.data))
            if init is not None:
                given = {**_init_architecture(init, given), **given}
            cfg = TrainConfig(out=str(out), **given)
            result = train(cfg, overwrite=overwrite, show_progress=not quiet, events=TrainConsole())
        print_result(result)
        if result.interrupted:
            raise typer.Exit(130)


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
