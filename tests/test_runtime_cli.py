"""`invedge` with the runtime alone: embed → index → search, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from invspread_edge_runtime.cli import add_full_toolkit_placeholders, create_app, run


def invedge(capsys, *argv: str) -> tuple[int, str, str]:
    app = create_app()
    add_full_toolkit_placeholders(app)
    capsys.readouterr()
    code = run(app, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err.replace("\n", " "), err


@pytest.fixture(scope="module")
def photos(image_folder, tmp_path_factory):
    """The 40 real images plus one corrupt file."""
    root = tmp_path_factory.mktemp("cli") / "photos"
    shutil.copytree(image_folder, root)
    (root / "class0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_embed_index_search_round_trip(capsys, tmp_path, tiny_export, photos):
    model = tiny_export / "model.onnx"
    code, _, err = invedge(capsys, "embed", model, photos, "--out", tmp_path / "photos.emb", "--batch", "16")
    assert code == 0, err
    assert "40 embeddings" in err and "1 unreadable" in err and "corrupt.jpg" in err
    assert "invedge index build" in err  # says what to run next

    code, _, err = invedge(
        capsys, "index", "build", tmp_path / "photos.emb", "--out", tmp_path / "photos.index"
    )
    assert code == 0, err
    assert "flat index of 40 items" in err

    query = sorted((photos / "class2").glob("*.png"))[0]
    code, out, err = invedge(capsys, "search", tmp_path / "photos.index", query, "--k", "3", "--json")
    assert code == 0, err
    payload = json.loads(out)
    hits = payload["results"][0]["neighbours"]
    assert hits[0]["id"] == f"class2/{query.name}" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (
        len(hits) == 3 and payload["backend"] == "ort-cpu" and payload["searcher"] in ("faiss-flat", "numpy")
    )

    code, out, err = invedge(
        capsys,
        "search",
        tmp_path / "photos.index",
        photos / "class1",
        "--k",
        "2",
        "--grid",
        tmp_path / "grid.png",
    )
    assert code == 0, err
    assert f"class2/{query.name}" not in out and "class1/" in out  # the table
    assert Image.open(tmp_path / "grid.png").size[0] > 0

    code, _, err = invedge(capsys, "embed", model, photos, "--out", tmp_path / "photos.emb")
    one_line_error(err, "already holds finished embeddings", "--overwrite")


def test_index_add_remove_info(capsys, tmp_path, tiny_export, image_folder):
    model = tiny_export / "model.onnx"
    for name in ("class0", "class1"):
        code, _, err = invedge(capsys, "embed", model, image_folder / name, "--out", tmp_path / f"{name}.emb")
        assert code == 0, err
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", tmp_path / "class0.emb", "--out", index)[0] == 0
    code, _, err = invedge(capsys, "index", "build", tmp_path / "class0.emb", "--out", index)
    one_line_error(err, "already exists", "--overwrite")

    # class1.emb ids are relative to its own root: "imgNNNNN.png", distinct from class0's
    code, out, err = invedge(capsys, "index", "add", index, tmp_path / "class1.emb", "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == 20 and json.loads(out)["added"] == 10
    code, out, _ = invedge(capsys, "index", "info", index, "--json", "--ids")
    info = json.loads(out)
    assert info["kind"] == "flat" and info["count"] == 20 and info["dim"] == 32
    victim = info["ids"][0]
    code, out, err = invedge(capsys, "index", "remove", index, victim, "--json")
    assert code == 0 and json.loads(out)["count"] == 19, err
    code, _, err = invedge(capsys, "index", "remove", index, victim)
    one_line_error(err, "not in the gallery")
    code, out, _ = invedge(capsys, "index", "info", index)
    assert code == 0 and "19 × 32" in out


def test_bad_input_gives_one_line_and_exit_1(capsys, tmp_path, tiny_export, image_folder):
    onnx = pytest.importorskip("onnx")
    model = tiny_export / "model.onnx"
    assert invedge(capsys, "embed", model, image_folder / "class3", "--out", tmp_path / "g.emb")[0] == 0
    assert invedge(capsys, "index", "build", tmp_path / "g.emb", "--out", tmp_path / "g.index")[0] == 0
    query = next((image_folder / "class3").glob("*.png"))

    code, _, err = invedge(capsys, "search", tmp_path / "g.index", query, "--k", "11")
    assert code == 1
    one_line_error(err, "k = 11", "holds 10 items")

    damaged = bytearray((tmp_path / "g.index").read_bytes())
    damaged[200] ^= 0x10
    (tmp_path / "bad.index").write_bytes(bytes(damaged))
    code, _, err = invedge(capsys, "search", tmp_path / "bad.index", query)
    assert code == 1
    one_line_error(err, "damaged")

    foreign = onnx.load(str(model))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    code, _, err = invedge(
        capsys, "embed", tmp_path / "foreign.onnx", image_folder, "--out", tmp_path / "x.emb"
    )
    assert code == 1
    one_line_error(err, "not an invspread-edge model")

    code, _, err = invedge(capsys, "embed", model, tmp_path / "nowhere", "--out", tmp_path / "y.emb")
    assert code == 1
    one_line_error(err, "not found")

    code, _, err = invedge(
        capsys, "search", tmp_path / "g.index", query, "--model", tmp_path / "foreign.onnx"
    )
    assert code == 1
    one_line_error(err, "not an invspread-edge model")

    code, _, err = invedge(
        capsys, "index", "build", tmp_path / "g.emb", "--out", tmp_path / "h.index", "--kind", "lsh"
    )
    assert code == 1
    one_line_error(err, "Invalid --kind")


def test_runtime_only_cli_lists_its_verbs_and_explains_the_rest(capsys):
    code, out, _ = invedge(capsys, "--help")
    assert code == 0
    for verb in ("embed", "index", "search", "train", "export"):
        assert verb in out
    code, _, err = invedge(capsys, "train", "--data", "fashion-mnist")
    assert code == 1
    one_line_error(err, "invspread-edge", "pip install")


def test_full_toolkit_help_lists_training_verbs_first():
    import re
    import subprocess
    import sys

    code = "import sys; sys.argv = ['invedge', '--help']; from invspread_edge.cli import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "100"}, check=True
    ).stdout
    commands = out[out.index("Commands") :]
    verbs = re.findall(r"^│ ([a-z][a-z-]+)\s{2,}", commands, flags=re.MULTILINE)
    assert verbs[:3] == ["train", "eval", "export"], verbs
    assert {"embed", "search", "bench", "build-engine"} <= set(verbs)
