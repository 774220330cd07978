"""`invedge deploy deepstream`: an nvinfer secondary-GIE config and the graph it needs, from an export."""

from __future__ import annotations

from pathlib import Path

import typer

from ..bounds import DLA_CORE, DS_BATCH, DS_GIE_ID, DS_GPU_ID, DS_OPERATE_ON_GIE_ID, helped
from .options import JsonOpt, existing


def deepstream_command(
    export: Path = typer.Argument(..., help="An export folder (or its run folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the config, the graph and a README."),
    precision: str = typer.Option(
        None, "--precision", help="fp32, fp16 or int8 (default: the best the export has: int8 > fp16 > fp32)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help=helped("Objects per inference call.", DS_BATCH)),
    gpu_id: int = typer.Option(0, "--gpu-id", help=helped("The GPU nvinfer runs on.", DS_GPU_ID)),
    gie_id: int = typer.Option(2, "--gie-id", help=helped("This SGIE's gie-unique-id.", DS_GIE_ID)),
    operate_on_gie_id: int = typer.Option(
        None,
        "--operate-on-gie-id",
        help=helped(
            "Embed only the objects of this GIE (the detector's gie-unique-id).", DS_OPERATE_ON_GIE_ID
        ),
    ),
    operate_on_class_ids: str = typer.Option(
        None, "--operate-on-class-ids", help="Embed only these detector classes, e.g. 0,2 (default: all)."
    ),
    dla: int = typer.Option(
        None,
        "--dla",
        help=helped("Run on this DLA core of a Jetson (fp16/int8), GPU fallback for the rest.", DLA_CORE),
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Write into a folder that is not empty: our files (those its manifest lists) are replaced, "
        "other files are left alone.",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Write an nvinfer SGIE config whose tensor meta is each object's embedding (checked on ONNX Runtime)."""
    from .. import console
    from ..deploy.deepstream import CONFIG_NAME, Settings, write_deepstream
    from ..deploy.deepstream.config import parse_class_ids
    from ..deploy.deepstream.writer import check_settings

    settings = Settings(
        precision=precision,
        batch_size=batch_size,
        gpu_id=gpu_id,
        gie_id=gie_id,
        operate_on_gie_id=operate_on_gie_id,
        operate_on_class_ids=parse_class_ids(operate_on_class_ids),
        dla_core=dla,
    )
    check_settings(settings)  # a bad flag: one line, before the export is read
    existing(export, "export", "Pass an export folder: invedge export RUN writes one")
    result = write_deepstream(export, out, settings, overwrite=overwrite)
    if json_out:
        console.print_json(result.to_json())
        return
    check = result.check
    console.success(
        f"wrote {', '.join(result.files)} into {out} ({result.precision}, from {result.source.name})"
    )
    console.info(
        "  checked on ONNX Runtime: the graph fed nvinfer's preprocessing gives the model's embeddings, "
        + check.summary()
    )
    for name in result.removed:
        console.info(f"  removed {name}: nvinfer built it from the graph that was replaced")
    console.info(f"Next: point a secondary GIE at {out / CONFIG_NAME} (not run here)")
