"""DLA engine builds, cache slots and loads against the real TensorRT API of one version (run per
version by tests/runtime/native_tensorrt/test_tensorrt_api.py). The builder is a double that reports
DLA cores (2, or 0 as on a GPU without DLA) and which layers `can_run_on_DLA`; no engine is built,
so what the DLA compiler accepts on a real Orin is not shown here (the hardware test does that).
"""

from __future__ import annotations

import json

import pytest
from engine_rig import PLAN

from invspread_edge_runtime.errors import ConfigError, EngineError
from invspread_edge_runtime.tensorrt.build import build_engine
from invspread_edge_runtime.tensorrt.cache import read_sidecar
from invspread_edge_runtime.tensorrt.load import get_or_build_engine, load_engine

# name, LayerType member, whether the DLA can run it
LAYERS = (("flatten", "SHUFFLE", True), ("matmul", "MATRIX_MULTIPLY", True), ("resize", "RESIZE", False))


@pytest.fixture
def dla_rig(rig, api, trt_real):
    """The rig with a builder that has two DLA cores and a network of LAYERS, one the DLA cannot run."""
    api.set_property(rig.builder, "num_DLA_cores", 2)
    api.set_property(rig.builder, "max_DLA_batch_size", 4096)
    layers = [
        api.double("ILayer", name=name, type=getattr(trt_real.LayerType, kind)) for name, kind, _ in LAYERS
    ]
    api.set_property(rig.network, "num_layers", len(layers))
    rig.network.get_layer.side_effect = lambda i: layers[i]
    on_dla = {id(layer): ok for layer, (_, _, ok) in zip(layers, LAYERS, strict=True)}
    rig.config.can_run_on_DLA.side_effect = lambda layer: on_dla[id(layer)]
    for name, value in (("default_device_type", trt_real.DeviceType.GPU), ("DLA_core", -1)):
        api.set_property(rig.config, name, value)
    api.set_property(rig.runtime, "DLA_core", -1)
    api.set_property(rig.runtime, "num_DLA_cores", 2)
    rig.layers = layers
    return rig


def assigned(double, name):
    """The values our code assigned to the property `name` of a double (PropertyMock calls with one arg)."""
    prop = type(double).__dict__[name]
    return [c.args[0] for c in prop.call_args_list if c.args]


def flags_set(rig):
    return [c.args[0] for c in rig.config.set_flag.call_args_list]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_dla_build_configures_the_core_with_gpu_fallback(
    dla_rig, trt_real, version_major, tmp_path, make_tiny_onnx, capsys, precision
):
    rig = dla_rig
    onnx = make_tiny_onnx(tmp_path / f"model.{precision}.onnx", precision=precision)
    out = tmp_path / "m.engine"
    info = build_engine(onnx, out, precision, max_batch=8, check=None, dla_core=1)

    # TensorRT 10: weakly typed with the graph's precision flag (what its DLA takes); 11: always strongly typed
    rig.builder.create_network.assert_called_once_with(0)
    assert assigned(rig.config, "default_device_type") == [trt_real.DeviceType.DLA]
    assert assigned(rig.config, "DLA_core") == [1]
    flags = trt_real.BuilderFlag
    expected = [flags.GPU_FALLBACK]
    if version_major == 10:
        expected += [flags.INT8, flags.FP16] if precision == "int8" else [flags.FP16]
    assert flags_set(rig) == expected
    # the DLA has no dynamic shapes: --max-batch alone fixes the batch
    rig.profile.set_shape.assert_called_once_with("images", (8, 3, 28, 28), (8, 3, 28, 28), (8, 3, 28, 28))
    assert [c.args[0] for c in rig.config.can_run_on_DLA.call_args_list] == rig.layers

    dla = {"core": 1, "layers": 3, "not_dla_capable": ["resize (RESIZE)"]}
    assert info.extra["dla"] == dla and info.key.dla_core == 1
    assert read_sidecar(out) == info
    assert json.loads((tmp_path / "m.engine.json").read_text())["extra"]["dla"] == dla
    assert (
        "DLA core 1: 1 of 3 layers not DLA-capable (TensorRT's can_run_on_DLA), they run on the GPU: "
        "resize (RESIZE)" in capsys.readouterr().err
    )


def test_all_dla_capable_layers_are_said_so(dla_rig, tmp_path, make_tiny_onnx, capsys):
    dla_rig.config.can_run_on_DLA.side_effect = lambda layer: True
    onnx = make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    info = build_engine(onnx, tmp_path / "m.engine", max_batch=4, check=None, dla_core=0)
    assert info.extra["dla"] == {"core": 0, "layers": 3, "not_dla_capable": []}
    assert "DLA core 0: all 3 layers DLA-capable (TensorRT's can_run_on_DLA)" in capsys.readouterr().err


def test_gpu_build_touches_no_dla_setting(dla_rig, trt_real, tmp_path, make_tiny_onnx):
    onnx = make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    info = build_engine(onnx, tmp_path / "m.engine", check=None)
    assert assigned(dla_rig.config, "default_device_type") == [] and flags_set(dla_rig) == []
    dla_rig.config.can_run_on_DLA.assert_not_called()
    assert info.key.dla_core is None and "dla" not in info.extra


@pytest.mark.parametrize(
    ("cores", "core", "message", "hint"),
    [
        (0, 0, "this GPU has no DLA (DLA cores: 0)", "Build without --dla"),
        (1, 1, "--dla 1: this device has 1 DLA core", "Use --dla 0"),
        (
            2,
            0,
            "--max-batch 64: this device's DLA takes batches of at most 32",
            "Use --max-batch 32 or less with --dla",
        ),
    ],
)
def test_missing_dla_core_is_one_line_before_parsing(
    dla_rig, api, tmp_path, make_tiny_onnx, cores, core, message, hint
):
    api.set_property(dla_rig.builder, "num_DLA_cores", cores)
    api.set_property(dla_rig.builder, "max_DLA_batch_size", 32)
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    with pytest.raises(EngineError) as exc:
        build_engine(onnx, tmp_path / "m.engine", check=None, dla_core=core)  # --max-batch 64
    assert (exc.value.message, exc.value.hint) == (message, hint) and "\n" not in str(exc.value)
    dla_rig.builder.create_network.assert_not_called()
    assert list(tmp_path.glob("m.engine*")) == []


def test_fp32_graph_is_refused_before_tensorrt(dla_rig, tmp_path, make_tiny_onnx):
    with pytest.raises(ConfigError, match="fp32 model; the DLA runs FP16 and INT8 only"):
        build_engine(make_tiny_onnx(tmp_path / "model.onnx"), tmp_path / "m.engine", check=None, dla_core=0)
    dla_rig.builder.create_network.assert_not_called()


def test_plan_check_gets_the_dla_core(dla_rig, tmp_path, make_tiny_onnx):
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    seen = []
    build_engine(
        onnx, tmp_path / "m.engine", check=lambda trt, plan, core: seen.append((plan, core)), dla_core=0
    )
    assert seen == [(PLAN, 0)]


def test_cache_keeps_dla_and_gpu_engines_apart(dla_rig, tmp_path, make_tiny_onnx):
    rig = dla_rig
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    cache = tmp_path / "cache"
    dla = get_or_build_engine(onnx, cache, max_batch=8, check=None, dla_core=0)
    again = get_or_build_engine(onnx, cache, max_batch=8, check=None, dla_core=0)
    gpu = get_or_build_engine(onnx, cache, max_batch=8, check=None)
    assert (dla.status, again.status, gpu.status) == ("built", "cached", "built")
    assert dla.info.engine_path.name.endswith("-int8-b8-8-8-dla0.engine")
    assert gpu.info.engine_path.name.endswith("-int8-b1-8-8.engine")
    assert rig.builder.build_serialized_network.call_count == 2
    # a DLA engine is deserialised by a runtime set to its core (built, then cached); a GPU one is not
    assert assigned(rig.runtime, "DLA_core") == [0, 0]


def test_cache_rebuilds_an_engine_of_another_dla_core(dla_rig, tmp_path, make_tiny_onnx, capsys):
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    first = get_or_build_engine(onnx, tmp_path / "cache", max_batch=8, check=None, dla_core=0)
    sidecar = first.info.engine_path.with_name(first.info.engine_path.name + ".json")
    doc = json.loads(sidecar.read_text())
    doc["key"]["dla_core"] = 1  # a sidecar that lies about its core: the key says why it is rebuilt
    sidecar.write_text(json.dumps(doc))
    again = get_or_build_engine(onnx, tmp_path / "cache", max_batch=8, check=None, dla_core=0)
    assert again.status == "rebuilt"
    assert "built for DLA core 1, DLA core 0 wanted" in capsys.readouterr().err


def test_explicit_dla_engine_loads_on_the_core_its_sidecar_names(dla_rig, tmp_path, make_tiny_onnx):
    rig = dla_rig
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    info = build_engine(onnx, tmp_path / "m.engine", max_batch=8, check=None, dla_core=1)
    loaded = load_engine(info.engine_path, onnx_path=onnx)
    assert loaded.engine is rig.engine and assigned(rig.runtime, "DLA_core") == [1]


def test_dla_engine_on_a_device_without_its_core_is_one_line(dla_rig, api, tmp_path, make_tiny_onnx):
    """An engine for DLA core 1 on an Orin with one DLA core: refused before TensorRT sees the plan."""
    rig = dla_rig
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    info = build_engine(onnx, tmp_path / "m.engine", max_batch=8, check=None, dla_core=1)
    api.set_property(rig.runtime, "num_DLA_cores", 1)
    with pytest.raises(EngineError) as exc:
        load_engine(info.engine_path, onnx_path=onnx)
    assert exc.value.message == "the engine runs on DLA core 1; this device has 1 DLA core"
    assert "--dla 0" in exc.value.hint and "\n" not in str(exc.value)
    rig.runtime.deserialize_cuda_engine.assert_not_called()
    assert assigned(rig.runtime, "DLA_core") == []


def test_build_engine_command_asks_for_the_dla_before_building(
    dla_rig, api, tmp_path, make_tiny_onnx, capsys
):
    """`invedge build-engine --dla 0` on a GPU without DLA: one line, nothing built or printed before."""
    from invspread_edge_runtime.cli import create_app, run

    api.set_property(dla_rig.builder, "num_DLA_cores", 0)
    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    capsys.readouterr()
    assert run(create_app(), ["build-engine", str(onnx), "--dla", "0", "--max-batch", "8"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: this GPU has no DLA (DLA cores: 0). Build without --dla", err
    dla_rig.builder.create_network.assert_not_called()


def test_export_engine_options_ask_for_the_dla(dla_rig, api):
    """`invedge export --engine --dla N` checks the device before any export work (EngineOptions)."""
    from invspread_edge_export.engines import EngineOptions

    EngineOptions(max_batch=8, dla_core=1).check(["int8"])
    api.set_property(dla_rig.builder, "num_DLA_cores", 0)
    with pytest.raises(EngineError, match=r"this GPU has no DLA \(DLA cores: 0\)"):
        EngineOptions(max_batch=8, dla_core=0).check(["int8"])
    EngineOptions(max_batch=8).check(["fp32"])  # a GPU build does not ask


def test_backend_reports_the_dla_core(dla_rig, tmp_path, make_tiny_onnx):
    from invspread_edge_runtime.backends.trt import TensorRTBackend

    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    dla_rig.simulate_engine(8, 8, 8)
    backend = TensorRTBackend(onnx, max_batch=8, cache_dir=tmp_path / "cache", check=None, dla_core=0)
    try:
        assert backend.info.device.startswith("DLA core 0 · ") and backend.loaded.info.key.dla_core == 0
        assert backend.infer(_images(3)).shape == (3, 32)  # padded to 8
        assert [c.args[1][0] for c in dla_rig.context.set_input_shape.call_args_list] == [8]
    finally:
        backend.close()


def _images(n):
    import numpy as np

    return np.random.default_rng(0).standard_normal((n, 3, 28, 28)).astype(np.float32)
