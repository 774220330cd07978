"""`invedge` with the runtime alone: embed → index → search, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from invspread_edge_runtime.cli import create_app, run


@pytest.fixture(autouse=True)
def runtime_alone(monkeypatch):
    """As with `pip install ./runtime` alone: no installed package adds verbs to `invedge`."""
    import invspread_edge_runtime.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])


def invedge(capsys, *argv: str) -> tuple[int, str, str]:
    app = create_app()
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

    code = "import sys; from invspread_edge_runtime.cli import main; sys.exit(main(['--help']))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "100"}, check=True
    ).stdout
    commands = out[out.index("Commands") :]
    verbs = re.findall(r"^│ ([a-z][a-z-]+)\s{2,}", commands, flags=re.MULTILINE)
    assert verbs[:3] == ["train", "eval", "export"], verbs
    assert {"embed", "search", "bench", "build-engine"} <= set(verbs)


# --- the runtime's data files: fast cases with a tiny model made without torch -------------------


@pytest.fixture(scope="module")
def tiny_model(make_tiny_onnx, tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny_model") / "model.onnx")


@pytest.fixture(scope="module")
def other_model(make_tiny_onnx, tmp_path_factory):
    """A model of another embedding space (another checkpoint hash in its metadata)."""
    import onnx

    path = make_tiny_onnx(tmp_path_factory.mktemp("other_model") / "model.onnx")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        prop.value = prop.value.replace("c" * 64, "d" * 64)
    onnx.save(model, str(path))
    return path


def pngs(folder, prefix, n=5, seed=0):
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(folder / f"{prefix}{i}.png")
    return folder


def snapshot(path):
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_failing_overwrite_keeps_the_finished_embeddings(capsys, tmp_path, tiny_model):
    out = tmp_path / "good.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a"), "--out", out)[0] == 0
    before = snapshot(out)
    code, _, err = invedge(capsys, "embed", tiny_model, tmp_path / "nowhere", "--out", out, "--overwrite")
    assert code == 1
    one_line_error(err, "not found")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    code, _, err = invedge(capsys, "embed", tiny_model, broken, "--out", out, "--overwrite")
    assert code == 1
    one_line_error(err, "no image could be embedded", "x.jpg")
    assert snapshot(out) == before


def test_embed_out_dot_overwrite_from_inside_the_folder(capsys, tmp_path, tiny_model, monkeypatch):
    """`--out . --overwrite` run inside the embeddings folder: the swap cannot rename "." (it
    failed with EBUSY after all the work) and the working folder is replaced under the process."""
    out = tmp_path / "here.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a"), "--out", out)[0] == 0
    monkeypatch.chdir(out)
    code, _, err = invedge(
        capsys, "embed", tiny_model, pngs(tmp_path / "b", "b"), "--out", ".", "--overwrite"
    )
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    ids = json.loads((out / "ids.json").read_text())
    assert ids and all(i.startswith("b") for i in ids), ids
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".here")) == [".here.emb.lock"]


def test_a_file_given_twice_is_embedded_once_with_a_note(capsys, tmp_path, tiny_model):
    folder = pngs(tmp_path / "a", "a")
    code, out, err = invedge(
        capsys,
        "embed",
        tiny_model,
        folder / "a1.png",
        folder,
        folder / "a1.png",
        "--out",
        tmp_path / "e.emb",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["count"] == 5 and json.loads(out)["duplicates_skipped"] == 2
    assert "given more than once" in err
    ids = json.loads((tmp_path / "e.emb" / "ids.json").read_text())
    assert sorted(ids) == [f"a{i}.png" for i in range(5)]


def test_unreadable_images_can_be_retried_once_fixed(capsys, tmp_path, tiny_model):
    folder = pngs(tmp_path / "a", "a")
    (folder / "late.png").write_bytes(b"\x89PNG half")
    out = tmp_path / "e.emb"
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", out)
    assert code == 0, err
    flat = err.replace("\n", " ")
    assert "1 unreadable image skipped" in flat and "late.png" in flat and "--retry-failed" in flat
    shutil.copy(folder / "a0.png", folder / "late.png")  # fixed
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", out, "--retry-failed", "--json")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 6 and manifest["failed_count"] == 0
    assert "late.png" in json.loads((out / "ids.json").read_text())
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", out, "--retry-failed", "--overwrite")
    assert code == 1
    one_line_error(err, "contradict")


def test_an_empty_gallery_is_a_valid_state(capsys, tmp_path, tiny_model):
    emb = tmp_path / "a.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=2), "--out", emb)[0] == 0
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", emb, "--out", index)[0] == 0
    code, out, err = invedge(capsys, "index", "remove", index, "a0.png", "a1.png", "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == 0
    code, out, err = invedge(capsys, "index", "info", index)
    assert code == 0 and "0 × 32" in out, err
    code, _, err = invedge(capsys, "search", index, tmp_path / "a" / "a0.png")
    assert code == 1
    one_line_error(err, "is empty", "invedge index add")
    code, out, err = invedge(capsys, "index", "add", index, emb, "--json")
    assert code == 0 and json.loads(out)["count"] == 2, err


def test_an_ids_file_that_is_not_utf8_is_one_line(capsys, tmp_path, tiny_model):
    emb = tmp_path / "a.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=2), "--out", emb)[0] == 0
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", emb, "--out", index)[0] == 0
    before = snapshot(index)
    (tmp_path / "ids.txt").write_bytes(b"a0.png\n\xff\xfeoops\n")
    code, _, err = invedge(capsys, "index", "remove", index, "--ids-file", tmp_path / "ids.txt")
    assert code == 1
    one_line_error(err, "not UTF-8", "line 2", "ids.txt")
    code, _, err = invedge(capsys, "index", "remove", index, "--ids-file", tmp_path)
    assert code == 1
    one_line_error(err, "is a folder")
    assert snapshot(index) == before
    (tmp_path / "ids.txt").write_text("a0.png\n\n")
    code, out, err = invedge(capsys, "index", "remove", index, "--ids-file", tmp_path / "ids.txt", "--json")
    assert code == 0 and json.loads(out)["removed"] == 1, err


def test_adding_embeddings_of_another_model_names_the_folder_not_queries(
    capsys, tmp_path, tiny_model, other_model
):
    ours, theirs = tmp_path / "ours.emb", tmp_path / "theirs.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=2), "--out", ours)[0] == 0
    assert invedge(capsys, "embed", other_model, pngs(tmp_path / "b", "b", n=2), "--out", theirs)[0] == 0
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", ours, "--out", index)[0] == 0
    before = snapshot(index)
    code, _, err = invedge(capsys, "index", "add", index, theirs)
    assert code == 1
    one_line_error(err, "theirs.emb", "another embedding space")
    assert "quer" not in err
    assert snapshot(index) == before


def test_edited_ids_are_refused_by_index_build(capsys, tmp_path, tiny_model):
    emb = tmp_path / "a.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=3), "--out", emb)[0] == 0
    ids = json.loads((emb / "ids.json").read_text())
    ids[0], ids[1] = ids[1], ids[0]
    (emb / "ids.json").write_text(json.dumps(ids))
    code, _, err = invedge(capsys, "index", "build", emb, "--out", tmp_path / "g.index")
    assert code == 1
    one_line_error(err, "ids.json", "does not match its manifest", "--overwrite")
    assert not (tmp_path / "g.index").exists()


def test_an_approximate_search_short_of_k_warns_and_its_json_says_so(capsys, tmp_path, tiny_model):
    pytest.importorskip("faiss")
    emb = tmp_path / "a.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=40), "--out", emb)[0] == 0
    index = tmp_path / "g.index"
    code, _, err = invedge(
        capsys, "index", "build", emb, "--out", index, "--kind", "ivf", "--nlist", "8", "--nprobe", "1"
    )
    assert code == 0, err
    query = tmp_path / "a" / "a0.png"
    code, out, err = invedge(capsys, "search", index, query, "--k", "30", "--json")
    assert code == 0, err
    payload = json.loads(out)
    record = payload["results"][0]
    assert set(payload) >= {"index", "k", "searcher", "results", "skipped", "warnings"}
    assert payload["k"] == 30 and record["found"] == len(record["neighbours"]) < 30
    assert len(payload["warnings"]) == 1 and "--nprobe" in payload["warnings"][0]
    assert "warning:" in err and "--exact" in err
    code, out, err = invedge(capsys, "search", index, query, "--k", "30", "--exact", "--json")
    assert code == 0 and json.loads(out)["warnings"] == [] and json.loads(out)["results"][0]["found"] == 30


def test_ctrl_c_in_embed_says_what_was_kept(capsys, tmp_path, tiny_model, monkeypatch):
    from invspread_edge_runtime.embedder import Embedder

    real = Embedder.embed_batches

    def interrupted(self, images):
        for n, batch in enumerate(real(self, images)):
            if n == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(Embedder, "embed_batches", interrupted)
    folder = pngs(tmp_path / "a", "a", n=6)
    out = tmp_path / "e.emb"
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", out, "--batch", "2")
    assert code == 130
    flat = " ".join(err.split())
    assert (
        "2 of 6 images are embedded and saved" in flat and f"Resume with: invedge embed {tiny_model}" in flat
    )
    monkeypatch.undo()
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", out, "--batch", "2")
    assert code == 0 and "resumed: 2 images" in err, err


def _wrong_embeddings(tmp_path, good, what):
    bad = tmp_path / f"bad-{what.replace(' ', '-')}.emb"
    shutil.copytree(good, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    if what == "manifest not an object":
        (bad / "manifest.json").write_text('"hello"')
    elif what == "manifest not json":
        (bad / "manifest.json").write_text("{oops")
    elif what == "manifest dim wrong type":
        (bad / "manifest.json").write_text(json.dumps(manifest | {"dim": [32]}))
    elif what == "vectors truncated":
        data = (bad / "embeddings.npy").read_bytes()
        (bad / "embeddings.npy").write_bytes(data[: len(data) // 2])
    elif what == "vectors flipped bit":
        data = bytearray((bad / "embeddings.npy").read_bytes())
        data[-3] ^= 0x40
        (bad / "embeddings.npy").write_bytes(bytes(data))
    elif what == "ids missing":
        (bad / "ids.json").unlink()
    elif what == "unfinished":
        (bad / "manifest.json").unlink()
    elif what == "a file":
        shutil.rmtree(bad)
        bad.write_text("x")
    elif what == "missing":
        shutil.rmtree(bad)
    return bad


WRONG_EMBEDDINGS = [
    "manifest not an object",
    "manifest not json",
    "manifest dim wrong type",
    "vectors truncated",
    "vectors flipped bit",
    "ids missing",
    "unfinished",
    "a file",
    "missing",
]


@pytest.mark.parametrize("what", WRONG_EMBEDDINGS)
@pytest.mark.parametrize("verb", ["build", "add"])
def test_index_verbs_given_wrong_embeddings_say_one_line(capsys, tmp_path, tiny_model, verb, what):
    good = tmp_path / "good.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=3), "--out", good)[0] == 0
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", good, "--out", index)[0] == 0
    before_index, before_good = snapshot(index), snapshot(good)
    bad = _wrong_embeddings(tmp_path, good, what)
    argv = (
        ["index", "build", bad, "--out", index, "--overwrite"]
        if verb == "build"
        else ["index", "add", index, bad]
    )
    code, _, err = invedge(capsys, *argv)
    assert code == 1, err
    one_line_error(err, bad.name)
    assert snapshot(index) == before_index and snapshot(good) == before_good


WRONG_INDEX_FILES = [
    "truncated",
    "flipped bit",
    "foreign",
    "empty file",
    "a folder",
    "missing",
    "embeddings folder",
]


@pytest.mark.parametrize("what", WRONG_INDEX_FILES)
@pytest.mark.parametrize("verb", ["info", "add", "remove", "search"])
def test_verbs_given_a_wrong_index_say_one_line(capsys, tmp_path, tiny_model, verb, what):
    good = tmp_path / "good.emb"
    assert invedge(capsys, "embed", tiny_model, pngs(tmp_path / "a", "a", n=3), "--out", good)[0] == 0
    index = tmp_path / "g.index"
    assert invedge(capsys, "index", "build", good, "--out", index)[0] == 0
    data = index.read_bytes()
    bad = tmp_path / "bad.index"
    if what == "truncated":
        bad.write_bytes(data[: len(data) - 40])
    elif what == "flipped bit":
        bad.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif what == "foreign":
        bad.write_bytes(b"PK\x03\x04 a zip file, say")
    elif what == "empty file":
        bad.write_bytes(b"")
    elif what == "a folder":
        bad.mkdir()
    elif what == "embeddings folder":
        bad = good
    before = snapshot(good)
    argv = {
        "info": ["index", "info", bad],
        "add": ["index", "add", bad, good],
        "remove": ["index", "remove", bad, "a0.png"],
        "search": ["search", bad, tmp_path / "a" / "a0.png", "--model", tiny_model],
    }[verb]
    code, _, err = invedge(capsys, *argv)
    assert code == 1, err
    one_line_error(err, bad.name)
    assert snapshot(good) == before


def test_embed_refuses_wrong_outputs_in_one_line(capsys, tmp_path, tiny_model):
    folder = pngs(tmp_path / "a", "a", n=2)
    (tmp_path / "file.emb").write_text("x")
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", tmp_path / "file.emb")
    assert code == 1
    one_line_error(err, "file.emb", "not a folder")
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    (holiday / "photo.jpg").write_bytes(b"x")
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", holiday, "--overwrite")
    assert code == 1
    one_line_error(err, "other files")
    assert (holiday / "photo.jpg").read_bytes() == b"x"
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", tmp_path / "file.emb" / "sub.emb")
    assert code == 1
    one_line_error(err)
    code, _, err = invedge(capsys, "index", "build", folder, "--out", tmp_path / "g.index")
    assert code == 1
    one_line_error(err, "not a finished embeddings folder")
    (tmp_path / "dir.index").mkdir()
    assert invedge(capsys, "embed", tiny_model, folder, "--out", tmp_path / "e.emb")[0] == 0
    code, _, err = invedge(
        capsys, "index", "build", tmp_path / "e.emb", "--out", tmp_path / "dir.index", "--overwrite"
    )
    assert code == 1
    one_line_error(err, "dir.index", "is a folder")


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only file system (a tmpfs mounted ro; root only, skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({made.stderr.decode(errors='replace').strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_an_unwritable_output_is_one_line(capsys, tmp_path, tiny_model, read_only_folder):
    folder = pngs(tmp_path / "a", "a", n=2)
    code, _, err = invedge(capsys, "embed", tiny_model, folder, "--out", read_only_folder / "e.emb")
    assert code == 1
    one_line_error(err, "cannot write", str(read_only_folder))
    assert invedge(capsys, "embed", tiny_model, folder, "--out", tmp_path / "e.emb")[0] == 0
    code, _, err = invedge(
        capsys, "index", "build", tmp_path / "e.emb", "--out", read_only_folder / "g.index"
    )
    assert code == 1
    one_line_error(err, "cannot write", str(read_only_folder))
