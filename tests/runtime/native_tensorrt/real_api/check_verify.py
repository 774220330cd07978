"""The probe check of a freshly built native TensorRT engine, against the real TensorRT API of one
version (run by tests/runtime/test_verify.py in the API-only install's process, like check_build.py).

The simulated engine computes x @ W from simulated device memory. With W the ONNX model's own
weight it is a faithful engine; with W perturbed it stands in for the engine that TensorRT's issue
tracker describes ("the QDQ ONNX is accurate, the engine is not"): the build must refuse it before
anything is written or cached.
"""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_runtime.metadata import read_model_meta
from invspread_edge_runtime.tensorrt.build import build_engine as build_unchecked
from invspread_edge_runtime.tensorrt.cache import read_sidecar
from invspread_edge_runtime.tensorrt.load import get_or_build_engine as get_or_build_unchecked
from invspread_edge_runtime.verify import backend as verify
from invspread_edge_runtime.verify.engines import probe_plan_check
from invspread_edge_runtime.verify.probes import write_probe_set


def build_engine(onnx, engine, **options):
    """The build as every caller runs it: with the probe check handed in."""
    return build_unchecked(onnx, engine, check=probe_plan_check(onnx, read_model_meta(onnx)), **options)


def get_or_build_engine(onnx, cache, **options):
    return get_or_build_unchecked(onnx, cache, check=probe_plan_check(onnx, read_model_meta(onnx)), **options)


@pytest.fixture
def export(tmp_path, make_tiny_onnx):
    """An export folder: model.onnx (fp32), model.int8.onnx (same graph) and a probe set."""
    from PIL import Image

    folder = tmp_path / "export"
    fp32 = make_tiny_onnx(folder / "model.onnx")
    make_tiny_onnx(folder / "model.int8.onnx", precision="int8")
    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for _ in range(32)]
    write_probe_set(folder, fp32, images, [f"random:{i}" for i in range(32)])
    return folder


def onnx_weight(path):
    import onnx
    from onnx import numpy_helper

    (init,) = onnx.load(str(path)).graph.initializer
    return numpy_helper.to_array(init)


def test_a_faithful_engine_passes_and_its_figures_go_into_the_sidecar(rig, export, tmp_path):
    rig.weight = onnx_weight(export / "model.int8.onnx")
    rig.simulate_engine(1, 64, 64)
    info = build_engine(export / "model.int8.onnx", tmp_path / "out" / "m.engine", max_batch=64)
    figures = read_sidecar(info.engine_path).extra["verify"]
    assert figures["status"] == "pass" and figures["backend"] == "trt" and figures["probes"] == 32
    assert figures["mean_cosine"] > 0.9999
    assert rig.executions, "the engine ran the probes"


def test_a_bad_engine_is_refused_before_it_is_written(rig, export, tmp_path):
    rig.weight = onnx_weight(export / "model.int8.onnx") + np.random.default_rng(3).standard_normal(
        rig.weight.shape
    ).astype(np.float32)
    rig.simulate_engine(1, 64, 64)
    out = tmp_path / "out" / "m.engine"
    with pytest.raises(verify.VerifyFailed, match=r"mean cos 0\.\d+, min -?0\.\d+, top-1 agreement") as exc:
        build_engine(export / "model.int8.onnx", out, max_batch=64)
    assert "the engine was not written" in exc.value.message
    assert "--calib-method" in exc.value.hint and "--precision fp16" in exc.value.hint
    assert exc.value.result.mean_cosine < 0.98
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_bad_engine_leaves_no_cached_engine(rig, export, tmp_path):
    rig.weight = -onnx_weight(export / "model.int8.onnx")  # every embedding flipped: cos -1
    rig.simulate_engine(1, 64, 64)
    cache = tmp_path / "cache"
    with pytest.raises(verify.VerifyFailed, match=r"mean cos -1\.00000"):
        get_or_build_engine(export / "model.int8.onnx", cache, max_batch=64)
    assert list(cache.glob("*.engine*")) == []


def test_without_a_probe_set_the_build_warns(rig, tmp_path, make_tiny_onnx, capsys):
    onnx = make_tiny_onnx(tmp_path / "lonely" / "model.onnx")
    info = build_engine(onnx, tmp_path / "m.engine")
    assert "no probe set beside model.onnx" in capsys.readouterr().err
    assert "verify" not in read_sidecar(info.engine_path).extra


def test_invedge_verify_engine_runs_a_named_engine(rig, export, tmp_path, capsys):
    """`invedge verify EXPORT --engine FILE`: the engine file as built, checked, never rebuilt."""
    import json

    from invspread_edge_runtime.cli import create_app, run

    rig.weight = onnx_weight(export / "model.int8.onnx")
    rig.simulate_engine(1, 64, 64)
    info = build_engine(export / "model.int8.onnx", export / "model.int8.engine", max_batch=64)
    capsys.readouterr()
    code = run(create_app(), ["verify", str(export), "--engine", str(info.engine_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert (result["precision"], result["backend"], result["status"]) == ("int8", "trt", "pass")
    assert result["model_file"] == "model.int8.engine"
    assert rig.builder.build_serialized_network.call_count == 1  # the named engine, not a new one

    rig.weight = rig.weight[:, ::-1].copy()  # the same file now runs wrong: a bad engine on this device
    code = run(create_app(), ["verify", str(export), "--engine", str(info.engine_path)])
    out, err = capsys.readouterr()
    assert code == 1 and "fails its probe check" in err and "--calib-method" in err
