"""TensorRT engines for an export's artifacts, built into the export folder (`invedge export --engine`).

One engine is built from each of the int8 and fp16 artifacts the export wrote (from fp32 when it
wrote neither), beside its ONNX file (`model.int8.engine`, ...), all sharing one timing cache in
the folder. The build is the runtime's own (`tensorrt.build.build_engine`, handed the probe check
`verify.engines.probe_plan_check`, which runs before anything is written). It lives here, not in the runtime, because it
reads and extends the export's report; it runs inside `export_model`, under the folder's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from invspread_edge_runtime.errors import ConfigError, MissingDependency
from invspread_edge_runtime.tensorrt.cache import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MIN_BATCH,
    DEFAULT_WORKSPACE_MB,
    TIMING_CACHE_NAME,
)

from .report import ExportReport

ENGINE_SOURCES = ("int8", "fp16")  # built from each of these the export wrote; fp32 when neither


@dataclass(frozen=True)
class EngineOptions:
    """The batch profile, workspace and device of the engines (the CLI's --min/--opt/--max-batch,
    --workspace-mb, --dla)."""

    min_batch: int = DEFAULT_MIN_BATCH
    opt_batch: int | None = None  # None: max_batch
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    dla_core: int | None = None  # build for this DLA core of a Jetson (fp16/int8 artifacts only)

    def check(self, sources: Collection[str] = ENGINE_SOURCES) -> None:
        """The one-line error for a bad profile, workspace or DLA core, for --dla without an
        artifact the DLA runs (`sources`: the precisions the engines are built from), for a machine
        without TensorRT, and for --dla on a device without that DLA core: raised before the export
        starts, not after minutes of it."""
        try:
            from invspread_edge_runtime.tensorrt import api
            from invspread_edge_runtime.tensorrt.build import check_profile
        except ImportError as exc:  # a runtime without the TensorRT module
            raise MissingDependency("invspread-edge-runtime[tensorrt]", "--engine") from exc
        check_profile(self.min_batch, self.opt_batch, self.max_batch, self.workspace_mb, self.dla_core)
        if self.dla_core is not None and not set(sources) & set(ENGINE_SOURCES):
            raise ConfigError(
                "--dla needs an fp16 or int8 artifact; the DLA runs FP16 and INT8 only",
                "Add --int8 or --fp16",
            )
        trt = api.import_tensorrt()  # MissingDependency / EngineError when TensorRT is absent or broken
        if self.dla_core is not None:
            api.check_dla_core(trt, self.dla_core, self.max_batch)


def build_engines(
    report: ExportReport, options: EngineOptions, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Build an engine beside each source artifact of `report` (see the module docstring); returns
    the report's entries for them ({"engine": path, **sidecar})."""
    from invspread_edge_runtime.metadata import read_model_meta
    from invspread_edge_runtime.tensorrt.build import build_engine, engine_path_for
    from invspread_edge_runtime.verify.engines import probe_plan_check

    entries = []
    for precision in [p for p in ENGINE_SOURCES if report.artifact(p)] or ["fp32"]:
        artifact = report.artifact(precision)
        assert artifact is not None  # fp32 is always exported
        onnx_path = artifact.path
        log(f"building a TensorRT engine from {onnx_path.name} (minutes on a Jetson)")
        meta = read_model_meta(onnx_path)
        info = build_engine(
            onnx_path,
            engine_path_for(onnx_path),
            precision,
            options.min_batch,
            options.opt_batch,
            options.max_batch,
            options.workspace_mb,
            report.out_dir / TIMING_CACHE_NAME,
            meta=meta,
            check=probe_plan_check(onnx_path, meta),
            dla_core=options.dla_core,
        )
        entries.append({"engine": str(info.engine_path), **info.to_json()})
    return entries
