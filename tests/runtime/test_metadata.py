import onnx
import pytest
from onnx import TensorProto, helper

from invspread_edge_runtime.errors import ModelError
from invspread_edge_runtime.metadata import ModelMeta, read_model_meta, read_onnx_props, replace_props


def _meta(**kw) -> ModelMeta:
    base = dict(
        arch="cifar_resnet18",
        image_size=28,
        embedding_dim=32,
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.5, 0.5),
        checkpoint_sha256="ab" * 32,
        toolkit_version="0.1.0",
    )
    base.update(kw)
    return ModelMeta(**base)


def _model(path, props: dict[str, str]):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["embeddings"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)


def test_round_trip_through_onnx_file_without_onnx_reader(tmp_path):
    meta = _meta(precision="int8", extra={"calibration": "fmnist-v1"})
    path = tmp_path / "m.onnx"
    _model(path, {**meta.to_props(), "other.key": "kept"})
    props = read_onnx_props(path)
    assert props["other.key"] == "kept"
    assert props == {p.key: p.value for p in onnx.load(path).metadata_props}  # same as onnx's own reader
    loaded = read_model_meta(path)
    assert loaded == meta
    assert loaded.extra == {"calibration": "fmnist-v1"}
    assert loaded.space_id == meta.space_id


def test_replace_props_swaps_ours_and_keeps_other_producers(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path, {"other.key": "kept", **_meta().to_props(), "invedge.stale": "x"})
    model = onnx.load(path)
    replace_props(model, _meta(image_size=32).to_props())
    props = {p.key: p.value for p in model.metadata_props}
    assert model.metadata_props[0].key == "other.key" and props["other.key"] == "kept"
    assert "invedge.stale" not in props
    assert ModelMeta.from_props(props) == _meta(image_size=32)


def test_foreign_model_is_refused(tmp_path):
    path = tmp_path / "foreign.onnx"
    _model(path, {"author": "someone else"})
    with pytest.raises(ModelError, match="not an invspread-edge model"):
        read_model_meta(path)


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"hello world, not onnx"]
)
def test_damaged_file_is_a_model_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        read_model_meta(path)


def test_truncated_model_is_a_model_error(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path, _meta().to_props())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(ModelError):
        read_model_meta(path)


def test_unsupported_values_are_refused():
    with pytest.raises(ModelError, match="precision"):
        ModelMeta.from_props(_meta(precision="int4").to_props())
    props = _meta().to_props()
    props["invedge.image_size"] = "big"
    with pytest.raises(ModelError, match="damaged"):
        ModelMeta.from_props(props)


@pytest.mark.parametrize(
    "sha",
    ["ab" * 31 + "\r\n", "ab" * 31 + "é€", "AB" * 32, "ab" * 16, "", "ab" * 32 + "\r\nX-Injected: 1"],
)
def test_a_checkpoint_that_is_not_a_sha256_is_refused_in_one_line(sha):
    """The space id (in /v1/info, a gallery, the X-Space-Id header) is cut from it: text that is
    not 64 hex digits would reach them."""
    props = _meta().to_props() | {"invedge.checkpoint_sha256": sha}
    with pytest.raises(ModelError, match=r"checkpoint_sha256 .* \(not 64 hex digits\)") as exc:
        ModelMeta.from_props(props, source="m.onnx")
    assert "\n" not in str(exc.value) and "\r" not in str(exc.value)
    assert str(exc.value).startswith("m.onnx has unsupported metadata")
