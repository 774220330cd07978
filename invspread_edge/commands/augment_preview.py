"""`invedge augment-preview`: check flags, call invspread_edge.augment_preview (or preview_run for
--run), say what it wrote."""

from __future__ import annotations

from pathlib import Path

import typer

from invspread_edge.augment_spec import DEFAULT_PRESET, KEYS, PRESETS, with_no_flip
from invspread_edge.config import MAX_PREVIEW_PIXELS, PREVIEW_BOUNDS
from invspread_edge_runtime.bounds import helped

HELP = """Draw a few training images beside their augmented views, as training draws them.

Examples:
  invedge augment-preview --data ./photos --preset natural --out aug.png
  invedge augment-preview --data ./parts --preset grayscale --aug crop=0.5-1 --out parts.png
  invedge augment-preview --run runs/fmnist --out fmnist_aug.png     # what that run trained with
"""


def register(app: typer.Typer) -> None:
    @app.command("augment-preview", help=HELP)
    def augment_preview_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="PNG to write."),
        data: str = typer.Option(None, "--data", "-d", help="fashion-mnist, cifar10:PATH, ... or a folder."),
        run: Path = typer.Option(
            None, "--run", help="Take data, size and augmentation from this run folder."
        ),
        preset: str = typer.Option(
            None, "--preset", help=f"{', '.join(PRESETS)} (default {DEFAULT_PRESET})."
        ),
        aug: str = typer.Option(None, "--aug", help=f"key=value,... over the preset ({', '.join(KEYS)})."),
        no_flip: bool = typer.Option(False, "--no-flip", help="No horizontal flip (same as --aug flip=0)."),
        image_size: int = typer.Option(
            None,
            "--image-size",
            help=helped("Size (default: the training rule).", PREVIEW_BOUNDS["image_size"]),
        ),
        images: int = typer.Option(
            8, "--images", "-n", help=helped("Images (rows).", PREVIEW_BOUNDS["images"])
        ),
        views: int = typer.Option(
            2,
            "--views",
            help=helped(
                f"Views per image (training uses 2); images × views × size² at most {MAX_PREVIEW_PIXELS:,}.",
                PREVIEW_BOUNDS["views"],
            ),
        ),
        seed: int = typer.Option(
            0, "--seed", help=helped("Random seed of the views.", PREVIEW_BOUNDS["seed"])
        ),
    ) -> None:
        from invspread_edge.augment_preview import augment_preview, preview_run
        from invspread_edge_runtime import console
        from invspread_edge_runtime.errors import InvedgeError

        if run is not None:
            if data is not None or preset is not None or aug is not None or no_flip or image_size is not None:
                raise InvedgeError(
                    "--run takes the run's own data, size and augmentation",
                    "Drop --data, --preset, --aug, --no-flip and --image-size, or drop --run",
                )
            preview = preview_run(run, out, images=images, views=views, seed=seed)
        elif data is None:
            raise InvedgeError("no data given", "Pass --data DATA (or --run RUN_DIR)")
        else:
            aug = with_no_flip(aug, no_flip) or ""
            preset = preset or DEFAULT_PRESET
            preview = augment_preview(
                data, out, preset, aug, image_size, images=images, views=views, seed=seed
            )
        console.info(
            f"{preview.images} images × {preview.views} views at {preview.image_size} px "
            f"({preview.size_reason}): {preview.spec}"
        )
        console.out.print(f"wrote {preview.path}", highlight=False)
