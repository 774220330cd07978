"""ONNX Runtime backends. The CPU one runs here; CUDA and TensorRT provider settings are checked as data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import EMBEDDING_ATOL

from invspread_edge_runtime.backends.ort import OrtBackend, available_providers, trt_provider_options
from invspread_edge_runtime.errors import EngineError, ModelError
from invspread_edge_runtime.files import sha256_file
from invspread_edge_runtime.metadata import read_model_meta

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def inputs(tiny_export, fmnist_test):
    from invspread_edge_runtime.preprocess import normalize

    meta = read_model_meta(tiny_export / "model.onnx")
    return normalize(fmnist_test.images[:13], meta.mean, meta.std)


@pytest.mark.parametrize(
    "artifact", ["model.onnx", "model.int8-cpu.onnx", "model.int8.onnx", "model.fp16.onnx"]
)
def test_cpu_backend_runs_every_artifact(tiny_export, inputs, artifact):
    with OrtBackend(tiny_export / artifact, "ort-cpu", threads=1) as backend:
        out = backend.infer(inputs)
        assert backend.info.name == "ort-cpu" and backend.info.device == "cpu"
        assert backend.info.precision == read_model_meta(tiny_export / artifact).precision
    assert out.shape == (13, 32) and out.dtype == np.float32
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1) as fp32:
        reference = fp32.infer(inputs)
    cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.99  # quantized artifacts stay close to FP32


def test_batches_are_split_at_a_static_batch_size(tiny_export, inputs):
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu", threads=1) as backend:
        whole = backend.infer(inputs)
        backend._max_batch = 4  # as for a model exported with a fixed batch, or a TensorRT profile
        np.testing.assert_allclose(backend.infer(inputs), whole, rtol=0, atol=EMBEDDING_ATOL)
        assert backend.infer(inputs[:0]).shape == (0, 32)


def test_wrong_input_shape_is_a_clear_error(tiny_export, inputs):
    with (
        OrtBackend(tiny_export / "model.onnx", "ort-cpu") as backend,
        pytest.raises(ModelError, match="expected input"),
    ):
        backend.infer(inputs[:, :, :20, :20])


def test_missing_gpu_providers_say_how_to_get_them(tiny_export):
    for kind, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")):
        if provider in available_providers():
            continue  # a GPU build of onnxruntime: nothing to check here
        with pytest.raises(EngineError, match="onnxruntime-gpu"):
            OrtBackend(tiny_export / "model.onnx", kind)


def test_tensorrt_provider_options_follow_the_artifact(tiny_export, tmp_path):
    int8 = trt_provider_options(
        read_model_meta(tiny_export / "model.int8.onnx"), tmp_path, max_batch=32, opt_batch=8
    )
    assert int8["trt_int8_enable"] is True and int8["trt_fp16_enable"] is True  # Q/DQ scales in the graph
    assert int8["trt_engine_cache_enable"] is True and int8["trt_timing_cache_enable"] is True
    assert int8["trt_engine_cache_path"] == str(tmp_path) == int8["trt_timing_cache_path"]
    assert int8["trt_profile_min_shapes"] == "images:1x3x28x28"
    assert int8["trt_profile_opt_shapes"] == "images:8x3x28x28"
    assert int8["trt_profile_max_shapes"] == "images:32x3x28x28"
    fp32 = trt_provider_options(read_model_meta(tiny_export / "model.onnx"), tmp_path)
    assert fp32["trt_int8_enable"] is False and fp32["trt_fp16_enable"] is False  # FP32 stays FP32
    fp16 = trt_provider_options(read_model_meta(tiny_export / "model.fp16.onnx"), tmp_path)
    assert fp16["trt_fp16_enable"] is True and fp16["trt_int8_enable"] is False


@pytest.mark.hardware
def test_gpu_providers_agree_with_cpu(tiny_export, inputs):
    """On a GPU machine with onnxruntime-gpu: CUDA and TensorRT providers against the CPU."""
    with OrtBackend(tiny_export / "model.onnx", "ort-cpu") as cpu:
        reference = cpu.infer(inputs)
    for kind in ("ort-cuda", "ort-trt"):
        with OrtBackend(tiny_export / "model.onnx", kind) as gpu:
            out = gpu.infer(inputs)
        cosine = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() > 0.9999, kind


# --- a graph whose tensors do not match its metadata is refused when the backend opens it ---------


def _retag(path, **props):
    import onnx

    model = onnx.load(path)
    for prop in model.metadata_props:
        key = prop.key.removeprefix("invedge.")
        if key in props:
            prop.value = str(props.pop(key))
    onnx.save(model, path)
    return path


def _one_channel_model(path):
    """Our metadata (3 channels, 28 × 28) on a graph that takes one channel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((28 * 28, 32), np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["embeddings"]),
        ],
        "one-channel",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    reference = onnx.load(path.parent / "reference.onnx")
    helper.set_model_props(model, {p.key: p.value for p in reference.metadata_props})
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        (
            {"image_size": 32},
            r"input has shape \(N, 3, 28, 28\), but its metadata says input 'images' \(N, 3, 32, 32\)",
        ),
        ({"embedding_dim": 64}, r"output has shape \(N, 32\), but .* output 'embeddings' \(N, 64\)"),
        ({"input_name": "pixels"}, "input is named 'images'"),
        ({"output_name": "vectors"}, "output is named 'embeddings'"),
        ("channels", r"input has shape \(N, 1, 28, 28\)"),
    ],
)
def test_graph_metadata_mismatch_is_refused_in_one_line(tmp_path, make_tiny_onnx, lie, message):
    make_tiny_onnx(tmp_path / "reference.onnx")
    if lie == "channels":
        path = _one_channel_model(tmp_path / "model.onnx")
    else:
        path = _retag(make_tiny_onnx(tmp_path / "model.onnx"), **lie)
    with pytest.raises(ModelError, match=message) as exc:
        OrtBackend(path, "ort-cpu", threads=1)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("model.onnx: the graph")
    assert "Re-export" in exc.value.hint


def test_a_model_with_our_metadata_but_a_broken_graph_is_one_error(tmp_path, make_tiny_onnx):
    import onnx

    path = make_tiny_onnx(tmp_path / "model.onnx")
    model = onnx.load(path)
    model.graph.node[1].input[1] = "no-such-weight"  # metadata intact, graph unusable
    onnx.save(model, path)
    with pytest.raises(EngineError, match=r"ort-cpu could not load model\.onnx") as exc:
        OrtBackend(path, "ort-cpu", threads=1)
    assert "\n" not in str(exc.value)


# --- the TensorRT provider's engine cache: keyed, checked, never reused unverified ------------------


class FakeOrt:
    """onnxruntime with a TensorRT provider that 'builds' (writes an engine file into its cache path)
    and runs on the CPU provider underneath: the cache handling is what is under test."""

    def __init__(self, real):
        self.real = real
        self.builds = 0
        self.__version__ = real.__version__

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_available_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, options, providers):
        fake = self
        trt_options = providers[0][1]
        cache = Path(trt_options["trt_engine_cache_path"])
        engine = cache / "TensorrtExecutionProvider_TRTKernel_graph_0_0.engine"
        if not engine.exists():  # what the provider does: reuse any engine file it finds by name
            fake.builds += 1
            engine.write_bytes(b"engine for " + trt_options["trt_profile_max_shapes"].encode())
        session = self.real.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        class Session:
            def __getattr__(self, name):
                return getattr(session, name)

            def get_providers(self):
                return ["TensorrtExecutionProvider", "CPUExecutionProvider"]

        return Session()


@pytest.fixture
def fake_trt_provider(monkeypatch):
    from invspread_edge_runtime.backends import ort, ort_cache

    fake = FakeOrt(ort.import_ort())
    monkeypatch.setattr(ort, "import_ort", lambda: fake)
    device = {"gpu": ("NVIDIA Orin (fake)", "8.7"), "trt": "libnvinfer 100300"}
    monkeypatch.setattr(ort_cache, "gpu_identity", lambda device_id=0: device["gpu"])
    monkeypatch.setattr(ort_cache, "tensorrt_version", lambda: device["trt"])
    return fake, device


def test_ort_trt_cache_is_keyed_and_reused_only_when_the_key_matches(
    tiny_export, tmp_path, fake_trt_provider, capsys
):
    from invspread_edge_runtime.backends import ort_cache

    fake, device = fake_trt_provider
    model = tiny_export / "model.onnx"
    first = OrtBackend(model, "ort-trt", max_batch=8, cache_dir=tmp_path / "cache")
    slot = first._cache_dir
    assert first.cache_status == "new" and fake.builds == 1
    assert slot.parent == tmp_path / "cache" and slot.name.startswith("model-") and "-fp32-b8-8" in slot.name
    key = ort_cache.read_slot_key(slot)
    assert key.gpu_name == "NVIDIA Orin (fake)" and key.tensorrt_version == "libnvinfer 100300"
    assert (
        key.onnx_sha256 == sha256_file(model) and key.options["trt_profile_max_shapes"] == "images:8x3x28x28"
    )
    first.close()

    again = OrtBackend(model, "ort-trt", max_batch=8, cache_dir=tmp_path / "cache")
    assert again.cache_status == "cached" and fake.builds == 1  # same key: the engine is reused
    again.close()

    device["trt"] = "libnvinfer 100900"  # a TensorRT upgrade: the provider itself would reuse the file
    upgraded = OrtBackend(model, "ort-trt", max_batch=8, cache_dir=tmp_path / "cache")
    assert (
        "built with TensorRT libnvinfer 100300, this is TensorRT libnvinfer 100900" in upgraded.cache_status
    )
    assert fake.builds == 2 and "starting it afresh" in capsys.readouterr().err
    assert ort_cache.read_slot_key(slot).tensorrt_version == "libnvinfer 100900"
    upgraded.close()


@pytest.mark.parametrize("damage", ["missing", "damaged", "other gpu", "engine file replaced", "no hashes"])
def test_an_unverified_ort_trt_cache_is_never_reused(tiny_export, tmp_path, fake_trt_provider, damage):
    """With "engine file replaced" the sidecar is intact, but the engine is not the file it vouched for;
    "no hashes": a sidecar that records the key only (as older ones did) vouches for no file."""
    from invspread_edge_runtime.backends import ort_cache

    fake, device = fake_trt_provider
    model = tiny_export / "model.onnx"
    OrtBackend(model, "ort-trt", max_batch=4, cache_dir=tmp_path / "c").close()
    slot = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    planted = slot / "TensorrtExecutionProvider_TRTKernel_graph_0_0.engine"
    planted.write_bytes(b"an engine from somewhere else")
    sidecar = slot / ort_cache.SIDECAR
    if damage == "missing":
        sidecar.unlink()
    elif damage == "damaged":
        sidecar.write_text("{not json")
    elif damage == "other gpu":
        device["gpu"] = ("NVIDIA H100", "9.0")
    elif damage == "no hashes":
        doc = json.loads(sidecar.read_text())
        del doc["files"]
        sidecar.write_text(json.dumps(doc))
    backend = OrtBackend(model, "ort-trt", max_batch=4, cache_dir=tmp_path / "c")
    assert backend.cache_status not in ("cached", "new") and fake.builds == 2
    assert planted.read_bytes() != b"an engine from somewhere else"  # emptied, then built afresh
    assert ort_cache.read_slot_key(slot) is not None
    backend.close()


def test_ort_trt_key_mismatches_are_named():
    from invspread_edge_runtime.backends.ort_cache import OrtTrtKey

    base = OrtTrtKey(
        "a" * 64,
        "1.22.0",
        "libnvinfer 100900",
        "NVIDIA H100",
        "9.0",
        "int8",
        {"trt_profile_max_shapes": "images:64x3x28x28"},
    )
    assert base.mismatches(base) == []
    other = OrtTrtKey(
        "b" * 64,
        "1.21.0",
        "libnvinfer 100800",
        "NVIDIA Orin",
        "8.7",
        "fp16",
        {"trt_profile_max_shapes": "images:32x3x28x28"},
    )
    reasons = base.mismatches(other)
    assert len(reasons) == 6
    assert any("onnxruntime 1.21.0" in r for r in reasons) and any(
        "trt_profile_max_shapes" in r for r in reasons
    )
