"""The bad-input corpus: every verb fed every kind of wrong file, folder and option value.

Each case builds its bad file or situation in `tmp_path` (copies of small good artifacts made once
per module, then damaged), runs the CLI verb in-process, and checks the one voice of errors:

- the exit code: 1 for what a command rejects (a damaged file, `--k 0`, an unknown `--backend`),
  2 for what click rejects before the command runs (an unknown option, `--k abc`);
- exactly one `error:` line on stderr, naming the file (or the option) and giving a next step
  ("what is wrong. Next step"; for an option value, what is allowed); no traceback, no "internal error" (a library exception that is not
  an `InvedgeError` is a bug); for cases marked `alone`, that line is all of stderr (the command
  must reject the input before doing or printing anything);
- every file in the case's folder is byte-for-byte as it was before, and no new file is left behind
  (except the hidden `.NAME.lock` files of invspread_edge_runtime/locks.py).

A few cases accept either answer, refusing (exit 1, as above) or going on with a warning that
names the file (exit 0): a damaged report.json of an export folder, a damaged run.json (the
checkpoint holds the run's config). Going on, nothing that existed may change either. (An artifact
that differs from what its folder's report.json records is refused: truncated or not.)

The case ids say what each case is: `<verb>-<what is wrong>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from milvus_testing import TEMPORARY, stopped_store
from tiny import TINY_TRAIN_OPTIONS, flip, truncate

pytest.importorskip("torch")  # the training verbs; the runtime-only edge is in test_cli_errors.py

from invspread_edge_runtime.cli import create_app, run

TINY_TRAIN = [*TINY_TRAIN_OPTIONS, "--eval-every", "0", "-q"]
UNWRITABLE = Path("/sys")  # not writable even by root (sysfs): EACCES / EPERM on create
# "what is wrong. Next step"; for an option value, saying what is allowed is the next step.
NEXT_STEP = re.compile(r"\.\s+\S|\b(must be|only|one of|at least|at most|use|pass|expected)\b", re.IGNORECASE)
JPEG_HEAD = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"  # a JPEG cut after its header
)


@dataclass(frozen=True)
class Good:
    """Small good artifacts, made once; cases copy what they use into their own folder."""

    run: Path  # a trained run: checkpoint.safetensors, run.json, metrics.jsonl, curves.png
    export: Path  # model.onnx, model.int8.onnx, model.int8-cpu.onnx, model.fp16.onnx, report.json
    images: Path  # 40 images (PNG and JPEG) in 4 class folders
    emb: Path  # embeddings of images/class0 with export/model.onnx
    index: Path  # a flat index of emb
    other_model: Path  # a valid model of another embedding space (same input size)
    other_emb: Path  # embeddings of images/class1 with other_model


def invedge(*argv: object) -> int:
    return run(create_app(), [str(a) for a in argv])


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_export, image_folder, make_tiny_onnx) -> Good:
    root = tmp_path_factory.mktemp("good")
    run_dir = root / "run"
    assert invedge(*tiny_train(root, out=run_dir)) == 0
    emb, index = root / "g.emb", root / "g.index"
    assert invedge("embed", tiny_export / "model.onnx", image_folder / "class0", "--out", emb) == 0
    assert invedge("index", "build", emb, "--out", index) == 0
    other_model = make_tiny_onnx(root / "other" / "model.onnx")
    other_emb = root / "other.emb"
    assert invedge("embed", other_model, image_folder / "class1", "--out", other_emb) == 0
    return Good(run_dir, tiny_export, image_folder, emb, index, other_model, other_emb)


# --- helpers that make bad files -------------------------------------------------------------------


def cp(src: Path, dst: Path) -> Path:
    """Copy a file or folder (without hidden lock files)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*.lock"))
    else:
        shutil.copy2(src, dst)
    return dst


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def edit_json(path: Path, change: Callable[[dict], object]) -> Path:
    obj = json.loads(path.read_text())
    new = change(obj)
    path.write_text(json.dumps(obj if new is None else new))
    return path


def png(path: Path, size: tuple[int, int] = (28, 28), mode: str = "L") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)
    return path


def bomb(path: Path) -> Path:
    """A valid PNG header claiming 40000 × 40000 pixels: a decompression bomb (1.6 G pixels)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 40001 * 8)  # a few rows; a decoder that trusts the header allocates all
    return put(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def bad_images(folder: Path) -> Path:
    """A folder whose every image is unreadable: empty, truncated JPEG, text named .png."""
    put(folder / "empty.png", b"")
    put(folder / "cut.jpg", JPEG_HEAD)
    put(folder / "text.png", "this is not an image\n")
    return folder


def non_utf8(folder: Path, data: bytes = b"junk") -> Path:
    """A file whose name is not valid UTF-8 (bytes 0xff 0xfe)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = os.fsdecode(b"\xff\xfeimage.png")
    (folder / name).write_bytes(data)
    return folder


def fifo(path: Path) -> Path:
    """A named pipe where a file is expected (replacing the file if there is one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def loop(path: Path) -> Path:
    """A symbolic link that points at itself (every access: ELOOP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)
    return path


DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, nested past Python's recursion limit
CKPT, NAN, INF = "checkpoint.safetensors", float("nan"), float("inf")


def checkpoint_with(path: Path, metadata: dict[str, str]) -> Path:
    """A real safetensors file with the given metadata (our format tag, a broken state, ...)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.zeros((2, 2), np.float32)}, str(path), metadata=metadata)
    return path


def poisoned(path: Path, name: str, value: float, whole: bool = False, keep: str = "") -> Path:
    """A safetensors file with `value` (NaN, inf, a huge number) in tensor `name`: its first element,
    or with `whole` all of it. `keep`: a prefix kept (and stripped) from the names, the rest dropped
    (e.g. "model." makes a plain state dict of a checkpoint's weights); metadata kept unless `keep`."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    tensors[name] = tensors[name].copy()
    if whole:
        tensors[name][...] = value
    else:
        tensors[name].reshape(-1)[0] = value
    if keep:
        tensors, metadata = {k[len(keep) :]: v for k, v in tensors.items() if k.startswith(keep)}, None
    save_file(tensors, str(path), metadata=metadata)
    return path


def nonfinite_onnx(src: Path, dst: Path, value: float = float("nan")) -> Path:
    """`src` with `value` in every float weight: a model whose every output is NaN or inf."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(np.full_like(weights, value), init.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def index_with_header(path: Path, header: object) -> Path:
    """An index file with our magic bytes and a valid checksum around `header` (no sections)."""
    blob = json.dumps(header).encode()
    body = b"IVEIDX01" + struct.pack("<Q", len(blob)) + blob
    return put(path, body + hashlib.sha256(body).digest())


def onnx_meta_edit(src: Path, dst: Path, **props: str) -> Path:
    """`src` with some invedge.* metadata values replaced (the graph no longer matches them)."""
    import onnx

    model = onnx.load(str(src))
    for prop in model.metadata_props:
        key = prop.key.removeprefix("invedge.")
        if key in props:
            prop.value = props[key]
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def run_copy(t: Path, g: Good) -> Path:
    return cp(g.run, t / "run")


def model_copy(t: Path, g: Good) -> Path:
    return cp(g.export / "model.onnx", t / "model.onnx")


def query(t: Path, g: Good) -> Path:
    return cp(next((g.images / "class2").glob("*.png")), t / "q.png")


def idx(t: Path, g: Good) -> Path:
    """A copy of the good index whose model path points at a copy of the model in `t`."""
    return cp(g.index, t / "g.index")


def tiny_train(t: Path, *extra: object, out: Path | None = None) -> list[object]:
    """`train` of 64 Fashion-MNIST images for one epoch into `out` (default: t/new), plus `extra`."""
    return ["train", "--data", "fashion-mnist", "--limit", "64", "--epochs", "1", "--out", out or t / "new",
            *TINY_TRAIN, *extra]  # fmt: skip


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, Good], list[object]]  # makes the bad situation in tmp, returns argv
    names: tuple[str, ...] = ()  # fragments the error line must contain (a file name, an option)
    code: int | tuple[int, ...] = 1  # (0, 1): refusing or going on are both right (see the case)
    alone: bool = False  # the error line must be all of stderr (rejected before any work)
    warned: bool = True  # with exit 0: a warning line must name `names`


def C(
    id: str,
    build: Callable[[Path, Good], list[object]],
    *names: str,
    code: int | tuple[int, ...] = 1,
    alone: bool = False,
    warned: bool = True,
) -> Case:
    return Case(id, build, tuple(names), code, alone, warned)


def _names(line: str, fragments: tuple[str, ...]) -> str | None:
    """The first fragment ("a|b": either) that `line` does not contain, or None."""
    for fragment in fragments:
        if not any(f.lower() in line.lower() for f in fragment.split("|")):
            return fragment
    return None


def _train_resume_damaged(change: Callable[[Path], object]) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        run_dir = run_copy(t, g)
        change(run_dir)
        return ["train", "--resume", run_dir, "--epochs", "2"]

    return build


def _eval_damaged(change: Callable[[Path], object]) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        run_dir = run_copy(t, g)
        change(run_dir)
        return ["eval", run_dir, "--limit", "100"]

    return build


def _export_damaged(change: Callable[[Path], object], *extra: object) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        run_dir = run_copy(t, g)
        change(run_dir)
        return ["export", run_dir, "--out", t / "exp", "--accuracy-images", "50", *extra]

    return build


def _embed_model(change: Callable[[Path, Good], Path]) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        return ["embed", change(t, g), cp(g.images / "class3", t / "imgs"), "--out", t / "new.emb"]

    return build


def _embed_images(make: Callable[[Path], Path]) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        return ["embed", model_copy(t, g), make(t / "imgs"), "--out", t / "new.emb"]

    return build


def _embed_ok(*extra: object) -> Callable[[Path, Good], list[object]]:
    """`embed` of good images with a good model, plus `extra` options."""

    def build(t: Path, g: Good) -> list[object]:
        return [
            "embed",
            model_copy(t, g),
            cp(g.images / "class3", t / "imgs"),
            "--out",
            t / "new.emb",
            *extra,
        ]

    return build


def _emb_damaged(verb: str, change: Callable[[Path], object]) -> Callable[[Path, Good], list[object]]:
    """`index build` / `index add` of a damaged copy of the good embeddings folder."""

    def build(t: Path, g: Good) -> list[object]:
        emb = cp(g.emb, t / "bad.emb")
        change(emb)
        if verb == "build":
            return ["index", "build", emb, "--out", t / "new.index"]
        return ["index", "add", idx(t, g), emb]

    return build


def _index_damaged(
    verb: str, change: Callable[[Path], object], *extra: str
) -> Callable[[Path, Good], list[object]]:
    def build(t: Path, g: Good) -> list[object]:
        index = idx(t, g)
        change(index)
        if verb == "search":
            return ["search", index, query(t, g), *extra]
        if verb == "add":
            return ["index", "add", index, cp(g.emb, t / "more.emb")]
        if verb == "remove":
            return ["index", "remove", index, "img00000.png", *extra]
        return ["index", "info", index, *extra]

    return build


def _search(*extra: object, model: Callable[[Path, Good], Path] | None = None):
    def build(t: Path, g: Good) -> list[object]:
        argv: list[object] = ["search", idx(t, g), query(t, g), *extra]
        if model is not None:
            argv += ["--model", model(t, g)]
        return argv

    return build


def _bench(*extra: object, target: Callable[[Path, Good], Path] | None = None):
    def build(t: Path, g: Good) -> list[object]:
        where = target(t, g) if target is not None else model_copy(t, g)
        count = [] if "--seconds" in extra else ["--iters", "2"]
        return [
            "bench",
            where,
            "--runtimes",
            "ort-cpu",
            "--batch",
            "1",
            "--images",
            "20",
            *count,
            "--warmup",
            "1",
            "--no-accuracy",
            *extra,
        ]

    return build


def _preview(t: Path, *extra: object) -> list[object]:
    """`augment-preview` of Fashion-MNIST into t/p.png, plus `extra` options."""
    return ["augment-preview", "--data", "fashion-mnist", "--out", t / "p.png", *extra]


RANGE = " to |at most|in [|<="  # an option out of its bound: the line gives the allowed range


def _engine(*extra: object, model: Callable[[Path, Good], Path] | None = None):
    def build(t: Path, g: Good) -> list[object]:
        return ["build-engine", (model or model_copy)(t, g), *extra]

    return build


def _engine_and_sidecar(t: Path, g: Good, sidecar: bool) -> Path:
    export = cp(g.export, t / "exp")
    put(export / "model.engine", b"not a serialized engine" * 10)
    if sidecar:
        put(export / "model.engine.json", "[]")
    return export / "model.engine"


def _serve(t: Path, g: Good, *extra: object) -> list[object]:
    """`serve` of a copy of the good model and index (port 0), plus `extra`: refused before it listens."""
    return ["serve", model_copy(t, g), "--index", idx(t, g), "--port", "0", *extra]


def _token_file(t: Path) -> Path:
    """A good token file (mode 600: no warning about who may read it)."""
    path = put(t / "token", "a-secret-token-123\n")
    path.chmod(0o600)
    return path


def _embedded(model: Path, images: Path, out: Path) -> Path:
    """A good embeddings folder of `images` (made by the CLI, before the case runs)."""
    assert invedge("embed", model, images, "--out", out) == 0
    return out


def _nan_export(t: Path, g: Good) -> Path:
    """A copy of the good export whose model.onnx gives NaN, its sha256 recomputed in report.json (as
    anyone can): only the probe check can tell."""
    export = cp(g.export, t / "exp")
    model = nonfinite_onnx(g.export / "model.onnx", export / "model.onnx")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()

    def record(report: dict) -> None:
        for artifact in report["artifacts"]:
            if artifact["file"] == "model.onnx":
                artifact.update(sha256=digest, bytes=model.stat().st_size)

    edit_json(export / "report.json", record)
    return export


def _nan_rows(emb: Path) -> None:
    """A NaN in the second embedding of a folder (as a broken model wrote before embed refused
    them), the manifest's sha256 recomputed (as anyone can)."""
    vectors = np.load(emb / "embeddings.npy")
    vectors[1, 0] = np.nan
    np.save(emb / "embeddings.npy", vectors, allow_pickle=False)
    digest = hashlib.sha256((emb / "embeddings.npy").read_bytes()).hexdigest()
    edit_json(emb / "manifest.json", lambda m: m.update(embeddings_sha256=digest))


def _ids(emb: Path, change: Callable[[list], object]) -> None:
    edit_json(emb / "ids.json", change)


def _swap(ids: list) -> None:
    ids[0], ids[1] = ids[1], ids[0]


def _damaged_export(t: Path, g: Good, change: Callable[[Path], object]) -> Path:
    """A copy of the good export folder (its report.json records every file), damaged by `change`."""
    export = cp(g.export, t / "exp")
    change(export)
    return export


def _verify(change: Callable[[Path], object], *extra: object) -> Callable[[Path, Good], list[object]]:
    """`verify` on ort-cpu of a copy of the good export folder damaged by `change(folder)`."""
    return lambda t, g: ["verify", _damaged_export(t, g, change), "--backend", "ort-cpu", *extra]


def _threshold_loosened(export: Path) -> None:
    """probes.json still valid JSON and every probe file's hash intact, a threshold edited."""
    edit_json(
        export / "probes" / "probes.json", lambda m: m["thresholds"]["int8-cpu"].update(mean_cosine=0.1)
    )


def _old_copy(t: Path, g: Good, make: Callable[[Path], object]) -> Path:
    """A copy of the good embeddings folder with `make(t / ".g.emb.old")` where a swap keeps the old one."""
    emb = cp(g.emb, t / "g.emb")
    make(t / ".g.emb.old")
    return emb


# fmt: off
CASES = [
    # train: bad data
    C("train-data-missing-folder", lambda t, g: tiny_train(t, "--data", t / "nope"), "nope", alone=True),
    C("train-data-empty-folder", lambda t, g: tiny_train(t, "--data", (t / "empty").mkdir() or t / "empty"),
      "empty"),
    C("train-data-every-image-unreadable", lambda t, g: tiny_train(t, "--data", bad_images(t / "imgs")), "imgs"),
    C("train-data-non-utf8-file-name", lambda t, g: tiny_train(t, "--data", non_utf8(t / "imgs")), "imgs"),
    C("train-data-is-a-file", lambda t, g: tiny_train(t, "--data", put(t / "data.txt", "x")), "data.txt"),
    C("train-overwrite-bad-data-keeps-run",
      lambda t, g: ["train", "--data", t / "nope", "--out", run_copy(t, g), "--overwrite", *TINY_TRAIN], "nope"),
    # train: bad option values
    C("train-temperature-0", lambda t, g: tiny_train(t, "--temperature", "0"), "--temperature", alone=True),
    C("train-temperature-negative", lambda t, g: tiny_train(t, "--temperature", "-0.1"), "--temperature",
      alone=True),
    C("train-lr-negative", lambda t, g: tiny_train(t, "--lr", "-1"), "--lr", alone=True),
    C("train-epochs-0", lambda t, g: tiny_train(t, "--epochs", "0"), "--epochs", alone=True),
    C("train-batch-size-0", lambda t, g: tiny_train(t, "--batch-size", "0"), "--batch-size", alone=True),
    C("train-batch-size-1", lambda t, g: tiny_train(t, "--batch-size", "1"), "--batch-size", alone=True),
    C("train-classes-reversed", lambda t, g: tiny_train(t, "--classes", "9-3"), "--classes", alone=True),
    C("train-classes-not-numbers", lambda t, g: tiny_train(t, "--classes", "shoes"), "--classes", alone=True),
    C("train-classes-out-of-range", lambda t, g: tiny_train(t, "--classes", "10-12"), "--classes|classes"),
    C("train-precision-unknown", lambda t, g: tiny_train(t, "--precision", "fp8"), "fp8|--precision", alone=True),
    C("train-arch-unknown", lambda t, g: tiny_train(t, "--arch", "vgg11"), "vgg11|--arch", alone=True),
    C("train-schedule-unknown", lambda t, g: tiny_train(t, "--schedule", "linear"), "linear|--schedule|--protocol", alone=True),
    C("train-device-unknown", lambda t, g: tiny_train(t, "--device", "tpu"), "tpu|--device|--backend|--runtimes", alone=True),
    C("train-width-0", lambda t, g: tiny_train(t, "--width", "0"), "--width", alone=True),
    C("train-embedding-dim-0", lambda t, g: tiny_train(t, "--embedding-dim", "0"), "--embedding-dim", alone=True),
    C("train-image-size-0", lambda t, g: tiny_train(t, "--image-size", "0"), "--image-size", alone=True),
    C("train-limit-negative", lambda t, g: tiny_train(t, "--limit", "-5"), "--limit", alone=True),
    C("train-workers-negative", lambda t, g: tiny_train(t, "--workers", "-1"), "--workers", alone=True),
    C("train-epochs-not-a-number", lambda t, g: tiny_train(t, "--epochs", "ten"), "--epochs", code=2, alone=True),
    C("train-unknown-option", lambda t, g: tiny_train(t, "--learning-rate", "1"), "--learning-rate", code=2,
      alone=True),
    # train: bad output
    C("train-out-is-a-file", lambda t, g: ["train", "--data", "fashion-mnist", "--out", put(t / "out.txt", "x"),
                                          *TINY_TRAIN], "out.txt", alone=True),
    C("train-out-parent-is-a-file", lambda t, g: ["train", "--data", "fashion-mnist", "--out",
                                                 put(t / "f.txt", "x") / "run", *TINY_TRAIN], "f.txt", alone=True),
    C("train-out-unwritable", lambda t, g: ["train", "--data", "fashion-mnist", "--limit", "64", "--out",
                                           UNWRITABLE / "invedge-run", *TINY_TRAIN], "invedge-run", alone=True),
    # train --resume: damaged run folders
    C("train-resume-no-checkpoint", lambda t, g: ["train", "--resume", mkdir(t / "norun")], "norun", alone=True),
    C("train-resume-checkpoint-zero-bytes",
      _train_resume_damaged(lambda r: put(r / "checkpoint.safetensors", b"")), "checkpoint.safetensors"),
    C("train-resume-checkpoint-truncated",
      _train_resume_damaged(lambda r: truncate(r / "checkpoint.safetensors")), "checkpoint.safetensors"),
    C("train-resume-checkpoint-foreign", _train_resume_damaged(
        lambda r: checkpoint_with(r / "checkpoint.safetensors", {"format": "pytorch"})), "checkpoint.safetensors"),
    C("train-resume-checkpoint-tag-without-config", _train_resume_damaged(
        lambda r: checkpoint_with(r / "checkpoint.safetensors", {"format": "invspread-edge/checkpoint/1",
                                                                 "state": "{}"})), "checkpoint.safetensors"),
    C("train-resume-run-json-is-a-list", _train_resume_damaged(lambda r: put(r / "run.json", "[]")), "run.json"),
    C("train-resume-run-json-not-json", _train_resume_damaged(lambda r: put(r / "run.json", "{oops")), "run.json"),
    C("train-resume-metrics-not-json", _train_resume_damaged(lambda r: put(r / "metrics.jsonl", "{\n")),
      "metrics.jsonl"),
    C("train-resume-metrics-non-utf8", _train_resume_damaged(lambda r: put(r / "metrics.jsonl", b"\xff\xfe\n")),
      "metrics.jsonl"),
    C("train-resume-checkpoint-is-a-folder", _train_resume_damaged(
        lambda r: ((r / "checkpoint.safetensors").unlink(), (r / "checkpoint.safetensors").mkdir())),
      "checkpoint.safetensors"),
    C("train-resume-epochs-0", lambda t, g: ["train", "--resume", run_copy(t, g), "--epochs", "0"], "--epochs",
      alone=True),
    C("train-resume-with-other-option", lambda t, g: ["train", "--resume", run_copy(t, g), "--lr", "1"], "--lr",
      alone=True),
    # eval
    C("eval-no-checkpoint", lambda t, g: ["eval", mkdir(t / "norun")], "norun", alone=True),
    C("eval-run-is-a-text-file", lambda t, g: ["eval", put(t / "run.txt", "hello")], "run.txt", alone=True),
    C("eval-checkpoint-zero-bytes", _eval_damaged(lambda r: put(r / "checkpoint.safetensors", b"")),
      "checkpoint.safetensors", alone=True),
    C("eval-checkpoint-truncated", _eval_damaged(lambda r: truncate(r / "checkpoint.safetensors")),
      "checkpoint.safetensors", alone=True),
    C("eval-checkpoint-text", _eval_damaged(lambda r: put(r / "checkpoint.safetensors", "weights\n")),
      "checkpoint.safetensors", alone=True),
    C("eval-checkpoint-tag-without-config", _eval_damaged(
        lambda r: checkpoint_with(r / "checkpoint.safetensors", {"format": "invspread-edge/checkpoint/1",
                                                                 "state": "{}"})), "checkpoint.safetensors",
      alone=True),
    C("eval-checkpoint-state-is-a-list", _eval_damaged(
        lambda r: checkpoint_with(r / "checkpoint.safetensors", {"format": "invspread-edge/checkpoint/1",
                                                                 "state": "[1, 2]"})), "checkpoint.safetensors",
      alone=True),
    C("eval-run-json-is-a-list", _eval_damaged(lambda r: put(r / "run.json", "[]")), "run.json", alone=True, code=(0, 1), warned=False),
    C("eval-run-json-not-json", _eval_damaged(lambda r: put(r / "run.json", "{oops")), "run.json", alone=True, code=(0, 1), warned=False),
    C("eval-run-json-non-utf8", _eval_damaged(lambda r: put(r / "run.json", b'{"config": "\xff"}')), "run.json",
      alone=True, code=(0, 1), warned=False),
    C("eval-run-json-config-is-a-string", _eval_damaged(
        lambda r: edit_json(r / "run.json", lambda j: j.update(config="fashion-mnist"))), "run.json", alone=True, code=(0, 1), warned=False),
    C("eval-protocol-unknown", lambda t, g: ["eval", run_copy(t, g), "--protocol", "linear"], "linear|--schedule|--protocol", alone=True),
    C("eval-classes-reversed", lambda t, g: ["eval", run_copy(t, g), "--classes", "9-3"], "--classes", alone=True),
    C("eval-batch-0", lambda t, g: ["eval", run_copy(t, g), "--batch", "0"], "--batch", alone=True),
    C("eval-limit-0", lambda t, g: ["eval", run_copy(t, g), "--limit", "0"], "--limit", alone=True),
    C("eval-data-missing-folder", lambda t, g: ["eval", run_copy(t, g), "--data", t / "nope"], "nope", alone=True),
    C("eval-data-every-image-unreadable", lambda t, g: ["eval", run_copy(t, g), "--data", bad_images(t / "imgs")],
      "imgs"),
    C("eval-precision-unknown", lambda t, g: ["eval", run_copy(t, g), "--precision", "fp8"], "fp8|--precision", alone=True),
    C("eval-baseline-unknown", lambda t, g: ["eval", "--baseline", "noise"], "noise|--baseline", alone=True),
    C("eval-width-0", lambda t, g: ["eval", run_copy(t, g), "--width", "0"], "--width", alone=True),
    C("eval-baseline-pixels-width-0", lambda t, g: ["eval", "--baseline", "pixels", "--width", "0"], "--width",
      alone=True),
    C("eval-baseline-pixels-precision-unknown", lambda t, g: ["eval", "--baseline", "pixels", "--precision", "fp8"],
      "fp8|--precision", alone=True),
    # export
    C("export-no-checkpoint", lambda t, g: ["export", mkdir(t / "norun")], "norun", alone=True),
    C("export-checkpoint-truncated", _export_damaged(lambda r: truncate(r / "checkpoint.safetensors")),
      "checkpoint.safetensors", alone=True),
    C("export-checkpoint-foreign", _export_damaged(
        lambda r: checkpoint_with(r / "checkpoint.safetensors", {"format": "pytorch"})), "checkpoint.safetensors",
      alone=True),
    C("export-run-json-is-a-list", _export_damaged(lambda r: put(r / "run.json", "[]")), "run.json", code=(0, 1), warned=False),
    C("export-calib-without-int8", _export_damaged(lambda r: None, "--calib", "somewhere"), "--calib", alone=True),
    C("export-calib-missing-folder", lambda t, g: _export_damaged(lambda r: None, "--int8", "--calib",
                                                                  t / "nope")(t, g), "nope", alone=True),
    C("export-calib-empty-folder", lambda t, g: _export_damaged(
        lambda r: None, "--int8", "--calib", (t / "calib").mkdir() or t / "calib")(t, g), "calib", alone=True),
    C("export-calib-is-a-file", lambda t, g: _export_damaged(
        lambda r: None, "--int8", "--calib", put(t / "calib.txt", "x"))(t, g), "calib.txt", alone=True),
    C("export-calib-too-few-images", lambda t, g: _export_damaged(
        lambda r: None, "--int8", "--calib", cp(g.images / "class0", t / "calib"))(t, g), "calib", alone=True),
    C("export-calib-holds-a-broken-image", lambda t, g: _export_damaged(
        lambda r: put(cp(g.images, t / "calib") / "class0" / "broken.jpg", b"\xff\xd8\xff"), "--int8", "--calib",
        t / "calib", "--calib-count", "41")(t, g), "broken.jpg", alone=True),
    C("export-calib-method-unknown", _export_damaged(lambda r: None, "--int8", "--calib-method", "kl"), "kl|--calib-method",
      alone=True),
    C("export-calib-count-0", _export_damaged(lambda r: None, "--int8", "--calib-count", "0"), "--calib-count",
      alone=True),
    C("export-accuracy-images-0", _export_damaged(lambda r: None, "--accuracy-images", "0"), "--accuracy-images",
      alone=True),
    C("export-opset-too-old", _export_damaged(lambda r: None, "--opset", "9"), "--opset", alone=True),
    C("export-min-cosine-above-1", _export_damaged(lambda r: None, "--min-cosine", "2"), "--min-cosine",
      alone=True),
    C("export-max-accuracy-drop-negative", _export_damaged(lambda r: None, "--max-accuracy-drop", "-1"),
      "--max-accuracy-drop", alone=True),
    C("export-out-is-a-file", lambda t, g: ["export", run_copy(t, g), "--out", put(t / "exp.txt", "x")],
      "exp.txt", alone=True),
    C("export-out-unwritable", lambda t, g: ["export", run_copy(t, g), "--out", UNWRITABLE / "invedge-exp"],
      "invedge-exp", alone=True),
    C("export-over-good-export-with-truncated-checkpoint", lambda t, g: [
        "export", truncate(cp(g.run, t / "run") / "checkpoint.safetensors"), "--out", cp(g.export, t / "exp")],
      "checkpoint.safetensors", alone=True),
    C("export-engine-without-tensorrt", _export_damaged(lambda r: None, "--engine"), "tensorrt|--engine", alone=True),
    # embed: bad models and export folders
    C("embed-model-missing", _embed_model(lambda t, g: t / "nope.onnx"), "nope.onnx", alone=True),
    C("embed-model-zero-bytes", _embed_model(lambda t, g: put(t / "model.onnx", b"")), "model.onnx", alone=True),
    C("embed-model-truncated", _embed_model(lambda t, g: truncate(model_copy(t, g))), "model.onnx", alone=True),
    C("embed-model-text", _embed_model(lambda t, g: put(t / "model.onnx", "not onnx\n")), "model.onnx", alone=True),
    C("embed-model-graph-differs-from-metadata", _embed_model(
        lambda t, g: onnx_meta_edit(g.export / "model.onnx", t / "model.onnx", embedding_dim="64")), "model.onnx",
      alone=True),
    C("embed-model-metadata-strings-for-numbers", _embed_model(
        lambda t, g: onnx_meta_edit(g.export / "model.onnx", t / "model.onnx", image_size="large")), "model.onnx",
      alone=True),
    C("embed-export-folder-empty", _embed_model(lambda t, g: (t / "exp").mkdir() or t / "exp"), "exp", alone=True),
    C("embed-export-folder-report-json-is-a-list", _embed_model(lambda t, g: (put(cp(g.export, t / "exp") /
                                                               "report.json", "[]")).parent), "report.json",
      code=(0, 1)),
    C("embed-export-folder-report-json-not-json", _embed_model(lambda t, g: (put(cp(g.export, t / "exp") /
                                                              "report.json", "{")).parent), "report.json",
      code=(0, 1)),
    C("embed-export-folder-truncated-artifact", _embed_model(
        lambda t, g: truncate(cp(g.export, t / "exp") / "model.int8-cpu.onnx").parent), "model.int8-cpu.onnx",
      "report.json", alone=True),
    C("embed-export-folder-only-foreign-onnx", _embed_model(lambda t, g: put(t / "exp" / "model.onnx", "x").parent),
      "exp", alone=True),
    C("embed-engine-without-sidecar", _embed_model(lambda t, g: _engine_and_sidecar(t, g, sidecar=False)),
      "model.engine", alone=True),
    C("embed-engine-sidecar-is-a-list", _embed_model(lambda t, g: _engine_and_sidecar(t, g, sidecar=True)),
      "model.engine", alone=True),
    # embed: bad images
    C("embed-images-missing", lambda t, g: ["embed", model_copy(t, g), t / "nope", "--out", t / "new.emb"], "nope",
      alone=True),
    C("embed-images-empty-folder", _embed_images(lambda f: f.mkdir() or f), "imgs", alone=True),
    C("embed-images-every-one-unreadable", _embed_images(bad_images), "cut.jpg|empty.png|text.png"),
    C("embed-image-zero-bytes-only", _embed_images(lambda f: put(f / "zero.png", b"").parent), "zero.png"),
    C("embed-image-truncated-jpeg-only", _embed_images(lambda f: put(f / "cut.jpg", JPEG_HEAD).parent), "cut.jpg"),
    C("embed-image-text-named-png-only", _embed_images(lambda f: put(f / "notes.png", "hello\n").parent),
      "notes.png"),
    C("embed-image-decompression-bomb-only", _embed_images(lambda f: bomb(f / "bomb.png").parent), "bomb.png"),
    C("embed-image-non-utf8-name-only", _embed_images(lambda f: non_utf8(f)), "image.png"),
    C("embed-images-folder-named-like-an-image", _embed_images(lambda f: ((f / "photo.png").mkdir(parents=True),
                                                              f)[1]), "imgs", alone=True),
    # embed: bad options and outputs
    C("embed-batch-0", _embed_ok("--batch", "0"),
      "--batch", alone=True),
    C("embed-threads-negative", _embed_ok("--threads", "-1"), "--threads", alone=True),
    C("embed-dtype-unknown", _embed_ok("--dtype", "int4"), "int4|--dtype", alone=True),
    C("embed-backend-unknown", _embed_ok("--backend", "tpu"), "tpu|--device|--backend|--runtimes", alone=True),
    C("embed-precision-unknown", _embed_ok("--precision", "fp8"), "fp8|--precision", alone=True),
    C("embed-batch-not-a-number", _embed_ok("--batch", "many"), "--batch", code=2, alone=True),
    C("embed-out-is-a-file", lambda t, g: ["embed", model_copy(t, g), cp(g.images / "class3", t / "imgs"), "--out",
                                          put(t / "out.emb", "x")], "out.emb", alone=True),
    C("embed-out-parent-is-a-file", lambda t, g: ["embed", model_copy(t, g), cp(g.images / "class3", t / "imgs"),
                                                 "--out", put(t / "f.txt", "x") / "out.emb"], "f.txt",
      alone=True),
    C("embed-out-unwritable", lambda t, g: ["embed", model_copy(t, g), cp(g.images / "class3", t / "imgs"), "--out",
                                           UNWRITABLE / "invedge.emb"], "invedge.emb", alone=True),
    C("embed-out-holds-other-files", lambda t, g: ["embed", model_copy(t, g), cp(g.images / "class3", t / "imgs"),
                                                  "--out", put(t / "mine" / "notes.txt", "x").parent], "mine",
      alone=True),
    C("embed-overwrite-missing-images-keeps-embeddings", lambda t, g: [
        "embed", model_copy(t, g), t / "nope", "--out", cp(g.emb, t / "g.emb"), "--overwrite"], "nope",
      alone=True),
    C("embed-overwrite-unreadable-images-keeps-embeddings", lambda t, g: [
        "embed", model_copy(t, g), bad_images(t / "imgs"), "--out", cp(g.emb, t / "g.emb"), "--overwrite"],
      "cut.jpg|empty.png|text.png"),
    C("embed-resume-with-other-model", lambda t, g: [
        "embed", cp(g.other_model, t / "other.onnx"), cp(g.images / "class0", t / "imgs"), "--out",
        cp(g.emb, t / "g.emb")], "g.emb", alone=True),
    # index build: bad embeddings folders
    C("index-build-embeddings-missing", lambda t, g: ["index", "build", t / "nope.emb", "--out", t / "n.index"],
      "nope.emb", alone=True),
    C("index-build-embeddings-is-a-file", lambda t, g: ["index", "build", put(t / "x.emb", "x"), "--out",
                                                       t / "n.index"], "x.emb", alone=True),
    C("index-build-no-manifest", _emb_damaged("build", lambda e: (e / "manifest.json").unlink()), "manifest.json",
      alone=True),
    C("index-build-manifest-is-a-list", _emb_damaged("build", lambda e: put(e / "manifest.json", "[]")),
      "manifest.json", alone=True),
    C("index-build-manifest-not-json", _emb_damaged("build", lambda e: put(e / "manifest.json", "{")),
      "manifest.json", alone=True),
    C("index-build-manifest-strings-for-numbers", _emb_damaged("build", lambda e: edit_json(
        e / "manifest.json", lambda m: m.update(count="ten", dim="wide"))), "manifest.json", alone=True),
    C("index-build-manifest-is-a-folder", _emb_damaged("build", lambda e: (
        (e / "manifest.json").unlink(), (e / "manifest.json").mkdir())), "manifest.json", alone=True),
    C("index-build-manifest-non-utf8", _emb_damaged("build", lambda e: put(e / "manifest.json", b'{"\xff": 1}')),
      "manifest.json", alone=True),
    C("index-build-vectors-truncated", _emb_damaged("build", lambda e: truncate(e / "embeddings.npy")),
      "embeddings.npy", alone=True),
    C("index-build-vectors-zero-bytes", _emb_damaged("build", lambda e: put(e / "embeddings.npy", b"")),
      "embeddings.npy", alone=True),
    C("index-build-vectors-flipped-byte", _emb_damaged("build", lambda e: flip(e / "embeddings.npy")),
      "embeddings.npy", alone=True),
    C("index-build-vectors-pickled-objects", _emb_damaged("build", lambda e: np.save(
        e / "embeddings.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)), "embeddings.npy",
      alone=True),
    C("index-build-ids-non-utf8", _emb_damaged("build", lambda e: put(e / "ids.json", b'["\xff\xfe"]')),
      "ids.json", alone=True),
    C("index-build-ids-is-an-object", _emb_damaged("build", lambda e: put(e / "ids.json", '{"a": 1}')),
      "ids.json", alone=True),
    C("index-build-ids-numbers", _emb_damaged("build", lambda e: _ids(e, lambda ids: list(range(len(ids))))),
      "ids.json", alone=True),
    C("index-build-ids-one-missing", _emb_damaged("build", lambda e: _ids(e, lambda ids: ids[:-1])), "ids.json",
      alone=True),
    C("index-build-ids-swapped", _emb_damaged("build", lambda e: _ids(e, _swap)), "ids.json", alone=True),
    C("index-build-ids-missing", _emb_damaged("build", lambda e: (e / "ids.json").unlink()), "ids.json",
      alone=True),
    # index build: bad options and outputs
    C("index-build-kind-unknown", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out", t / "n.index",
                                               "--kind", "lsh"], "lsh|--kind", alone=True),
    C("index-build-ivf-nlist-0", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out", t / "n.index",
                                              "--kind", "ivf", "--nlist", "0"], "--nlist", alone=True),
    C("index-build-hnsw-m-0", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out", t / "n.index",
                                           "--kind", "hnsw", "--m", "0"], "--m", alone=True),
    C("index-build-threads-negative", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out",
                                                   t / "n.index", "--threads", "-2"], "--threads", alone=True),
    C("index-build-out-is-a-folder", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out",
                                                  (t / "n.index").mkdir() or t / "n.index", "--overwrite"],
      "n.index", alone=True),
    C("index-build-out-parent-is-a-file", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out",
                                                       put(t / "f.txt", "x") / "n.index"], "f.txt", alone=True),
    C("index-build-out-unwritable", lambda t, g: ["index", "build", cp(g.emb, t / "g.emb"), "--out",
                                                 UNWRITABLE / "invedge.index"], "invedge.index", alone=True),
    C("index-build-overwrite-bad-embeddings-keeps-index", lambda t, g: [
        "index", "build", truncate(cp(g.emb, t / "bad.emb") / "embeddings.npy").parent, "--out", idx(t, g),
        "--overwrite"], "embeddings.npy", alone=True),
    # index add
    C("index-add-index-missing", lambda t, g: ["index", "add", t / "nope.index", cp(g.emb, t / "g.emb")],
      "nope.index", alone=True),
    C("index-add-index-zero-bytes", _index_damaged("add", lambda i: put(i, b"")), "g.index", alone=True),
    C("index-add-index-truncated", _index_damaged("add", truncate), "g.index", alone=True),
    C("index-add-index-text", _index_damaged("add", lambda i: put(i, "an index\n")), "g.index", alone=True),
    C("index-add-damaged-embeddings-keeps-index", _emb_damaged("add", lambda e: truncate(e / "embeddings.npy")),
      "embeddings.npy", alone=True),
    C("index-add-ids-non-utf8-keeps-index", _emb_damaged("add", lambda e: put(e / "ids.json", b'["\xff"]')),
      "ids.json", alone=True),
    C("index-add-embeddings-of-another-model", lambda t, g: ["index", "add", idx(t, g),
                                                            cp(g.other_emb, t / "other.emb")], "other.emb",
      alone=True),
    C("index-add-same-ids-again", lambda t, g: ["index", "add", idx(t, g), cp(g.emb, t / "g.emb")], "g.emb",
      alone=True),
    C("index-add-second-folder-bad-keeps-index", lambda t, g: [
        "index", "add", idx(t, g), cp(g.other_emb, t / "ok.emb"), t / "nope.emb"], "nope.emb", alone=True),
    C("index-add-index-is-a-folder", lambda t, g: ["index", "add", (t / "g.index").mkdir() or t / "g.index",
                                                  cp(g.emb, t / "g.emb")], "g.index", alone=True),
    # index remove / info
    C("index-remove-unknown-id", _index_damaged("remove", lambda i: None, "no-such-id"), "no-such-id", alone=True),
    C("index-remove-no-ids", lambda t, g: ["index", "remove", idx(t, g)], "--ids-file", alone=True),
    C("index-remove-ids-file-missing", lambda t, g: ["index", "remove", idx(t, g), "--ids-file", t / "ids.txt"],
      "ids.txt", alone=True),
    C("index-remove-ids-file-non-utf8", lambda t, g: ["index", "remove", idx(t, g), "--ids-file",
                                                     put(t / "ids.txt", b"\xff\xfe\n")], "ids.txt", alone=True),
    C("index-remove-ids-file-is-a-folder", lambda t, g: ["index", "remove", idx(t, g), "--ids-file",
                                                        mkdir(t / "idsdir")], "idsdir", alone=True),
    C("index-remove-index-flipped-byte", _index_damaged("remove", flip), "g.index", alone=True),
    C("index-info-missing", lambda t, g: ["index", "info", t / "nope.index"], "nope.index", alone=True),
    C("index-info-flipped-byte", _index_damaged("info", flip), "g.index", alone=True),
    C("index-info-truncated", _index_damaged("info", lambda i: truncate(i, 0.9)), "g.index", alone=True),
    C("index-info-header-is-a-list", _index_damaged("info", lambda i: index_with_header(i, [])), "g.index",
      alone=True),
    C("index-info-header-strings-for-numbers", _index_damaged("info", lambda i: index_with_header(i, {
        "format": "invspread-edge/index/1", "kind": "flat", "space": "x", "sections": {
            "vectors": {"offset": "a", "nbytes": "b", "shape": ["n", "d"]}, "ids": {}, "locations": {}}})),
      "g.index", alone=True),
    C("index-info-is-a-folder", lambda t, g: ["index", "info", (t / "g.index").mkdir() or t / "g.index"],
      "g.index", alone=True),
    C("index-info-an-embeddings-folder", lambda t, g: ["index", "info", cp(g.emb, t / "g.emb")], "g.emb",
      alone=True),
    # search
    C("search-index-missing", lambda t, g: ["search", t / "nope.index", query(t, g)], "nope.index", alone=True),
    C("search-index-flipped-byte", _index_damaged("search", flip), "g.index", alone=True),
    C("search-index-zero-bytes", _index_damaged("search", lambda i: put(i, b"")), "g.index", alone=True),
    C("search-index-is-an-embeddings-folder", lambda t, g: ["search", cp(g.emb, t / "g.emb"), query(t, g)],
      "g.emb", alone=True),
    C("search-k-0", _search("--k", "0"), "--k", alone=True),
    C("search-k-negative", _search("--k", "-1"), "--k", alone=True),
    C("search-k-above-gallery-size", _search("--k", "11"), "--k", alone=True),
    C("search-k-not-a-number", _search("--k", "five"), "--k", code=2, alone=True),
    C("search-backend-unknown", _search("--backend", "tpu"), "tpu|--device|--backend|--runtimes", alone=True),
    C("search-threads-negative", _search("--threads", "-1"), "--threads", alone=True),
    C("search-nprobe-0", _search("--nprobe", "0"), "--nprobe", alone=True),
    C("search-query-missing", lambda t, g: ["search", idx(t, g), t / "nope.png"], "nope.png", alone=True),
    C("search-query-empty-folder", lambda t, g: ["search", idx(t, g), mkdir(t / "noqueries")], "noqueries",
      alone=True),
    C("search-query-zero-bytes", lambda t, g: ["search", idx(t, g), put(t / "q.png", b"")], "q.png"),
    C("search-query-truncated-jpeg", lambda t, g: ["search", idx(t, g), put(t / "q.jpg", JPEG_HEAD)],
      "q.jpg"),
    C("search-query-text-named-png", lambda t, g: ["search", idx(t, g), put(t / "q.png", "hello")], "q.png"),
    C("search-query-decompression-bomb", lambda t, g: ["search", idx(t, g), bomb(t / "q.png")], "q.png"),
    C("search-model-missing", _search(model=lambda t, g: t / "nope.onnx"), "nope.onnx", alone=True),
    C("search-model-text", _search(model=lambda t, g: put(t / "m.onnx", "text")), "m.onnx", alone=True),
    C("search-model-of-another-space", _search(model=lambda t, g: cp(g.other_model, t / "other.onnx")),
      "other.onnx", alone=True),
    C("search-grid-parent-is-a-file", _search("--grid", "GRID"), "grid.png"),
    C("search-grid-is-a-folder", lambda t, g: _search("--grid", (t / "grid.png").mkdir() or t / "grid.png")(t, g),
      "grid.png", alone=True),
    C("search-grid-unwritable", _search("--grid", UNWRITABLE / "invedge-grid.png"), "invedge-grid.png",
      alone=True),
    # bench
    C("bench-batch-0", _bench("--batch", "0"), "--batch", alone=True),
    C("bench-batch-negative", _bench("--batch", "1,-8"), "--batch", alone=True),
    C("bench-batch-not-numbers", _bench("--batch", "a,b"), "--batch", alone=True),
    C("bench-batch-empty", _bench("--batch", ","), "--batch", alone=True),
    C("bench-runtimes-unknown", _bench("--runtimes", "tpu"), "tpu|--device|--backend|--runtimes", alone=True),
    C("bench-precision-unknown", _bench("--precision", "fp8"), "fp8|--precision", alone=True),
    C("bench-images-0", _bench("--images", "0"), "--images", alone=True),
    C("bench-seconds-negative", _bench("--seconds", "-1"), "--seconds", alone=True),
    C("bench-iters-0", _bench("--iters", "0"), "--iters", alone=True),
    C("bench-warmup-garbage", _bench("--warmup", "soon"), "--warmup", alone=True),
    C("bench-threads-negative", _bench("--threads", "-1"), "--threads", alone=True),
    C("bench-target-missing", _bench(target=lambda t, g: t / "nope"), "nope", alone=True),
    C("bench-target-text-onnx", _bench(target=lambda t, g: put(t / "m.onnx", "text")), "m.onnx", alone=True),
    C("bench-run-folder-without-export", _bench(target=run_copy), "run", alone=True),
    C("bench-data-missing-folder", _bench("--data", "NOPE"), "nope", alone=True),
    C("bench-data-every-image-unreadable", lambda t, g: _bench("--data", bad_images(t / "imgs"))(t, g), "imgs",
      alone=True),
    C("bench-data-empty-folder", lambda t, g: _bench("--data", mkdir(t / "noimages"))(t, g), "noimages",
      alone=True),
    C("bench-md-parent-is-a-file", _bench("--md", "PARENTFILE"), "f.txt", alone=True),
    C("bench-plot-is-a-folder", _bench("--plot", "FOLDER"), "plot.png", alone=True),
    C("bench-json-unwritable", _bench("--json", UNWRITABLE / "invedge-bench.json"), "invedge-bench.json",
      alone=True),
    # build-engine
    C("build-engine-model-missing", _engine(model=lambda t, g: t / "nope.onnx"), "nope.onnx", alone=True),
    C("build-engine-model-text", _engine(model=lambda t, g: put(t / "m.onnx", "text")), "m.onnx", alone=True),
    C("build-engine-min-batch-0", _engine("--min-batch", "0"), "--min-batch", alone=True),
    C("build-engine-max-below-min", _engine("--min-batch", "8", "--max-batch", "4"), "--max-batch", alone=True),
    C("build-engine-precision-unknown", _engine("--precision", "fp8"), "fp8|--precision", alone=True),
    C("build-engine-workspace-0", _engine("--workspace-mb", "0"), "--workspace-mb", alone=True),
    # one kind of file where another is expected
    C("eval-run-is-an-export-folder", lambda t, g: ["eval", cp(g.export, t / "exp")], "exp", alone=True),
    C("export-run-is-an-onnx-file", lambda t, g: ["export", model_copy(t, g), "--out", t / "exp"], "model.onnx",
      alone=True),
    C("train-resume-an-export-folder", lambda t, g: ["train", "--resume", cp(g.export, t / "exp")], "exp",
      alone=True),
    C("embed-model-is-a-checkpoint", _embed_model(lambda t, g: cp(g.run / "checkpoint.safetensors",
                                                                  t / "checkpoint.safetensors")),
      "checkpoint.safetensors", alone=True),
    C("embed-model-is-an-index", _embed_model(lambda t, g: idx(t, g)), "g.index", alone=True),
    C("index-build-from-an-export-folder", lambda t, g: ["index", "build", cp(g.export, t / "exp"), "--out",
                                                        t / "n.index"], "exp", alone=True),
    C("index-build-from-an-index-file", lambda t, g: ["index", "build", idx(t, g), "--out", t / "n.index"],
      "g.index", alone=True),
    C("index-add-an-index-file-as-embeddings", lambda t, g: ["index", "add", idx(t, g),
                                                            cp(g.index, t / "other.index")], "other.index",
      alone=True),
    C("index-info-zero-bytes", _index_damaged("info", lambda i: put(i, b"")), "g.index", alone=True),
    C("index-remove-ids-file-empty", lambda t, g: ["index", "remove", idx(t, g), "--ids-file",
                                                  put(t / "ids.txt", "\n\n")], "ids", alone=True),
    C("search-query-is-an-index-file", lambda t, g: ["search", idx(t, g), cp(g.index, t / "q.index")], "q.index"),
    C("search-query-non-utf8-name-only", lambda t, g: ["search", idx(t, g), non_utf8(t / "queries")],
      "image.png"),
    C("search-model-is-an-index-file", _search(model=lambda t, g: cp(g.index, t / "m.index")), "m.index",
      alone=True),
    C("bench-target-is-an-embeddings-folder", _bench(target=lambda t, g: cp(g.emb, t / "g.emb")), "g.emb",
      alone=True),
    C("bench-target-is-a-checkpoint", _bench(target=lambda t, g: cp(g.run / "checkpoint.safetensors",
                                                                    t / "checkpoint.safetensors")),
      "checkpoint.safetensors", alone=True),
    C("build-engine-model-is-a-folder", _engine(model=lambda t, g: mkdir(t / "models")), "models", alone=True),
    C("build-engine-folder-without-the-precision", _engine("--precision", "fp16", model=lambda t, g: cp(
        g.export / "model.onnx", t / "only" / "model.onnx").parent), "fp16", alone=True),
    C("build-engine-folder-int8-cpu", _engine("--precision", "int8-cpu", model=lambda t, g: cp(
        g.export, t / "exp")), "int8-cpu", alone=True),
    C("train-data-one-image", lambda t, g: tiny_train(t, "--data", png(t / "one" / "a.png").parent), "one"),
    C("eval-data-empty-folder", lambda t, g: ["eval", run_copy(t, g), "--data", mkdir(t / "noimages")],
      "noimages", alone=True),
    # the app itself
    C("unknown-verb", lambda t, g: ["embedd", "x"], "embedd", code=2, alone=True),
    C("index-unknown-subverb", lambda t, g: ["index", "merge", "x"], "merge", code=2, alone=True),
    C("search-missing-argument", lambda t, g: ["search", idx(t, g)], "--help", code=2, alone=True),
    # FIFOs where a file is expected (a read would wait forever)
    C("index-info-a-fifo", lambda t, g: ["index", "info", fifo(t / "g.index")], "g.index", alone=True),
    C("index-build-vectors-a-fifo", _emb_damaged("build", lambda e: fifo(e / "embeddings.npy")),
      "embeddings.npy", alone=True),
    C("index-build-ids-a-fifo", _emb_damaged("build", lambda e: fifo(e / "ids.json")), "ids.json", alone=True),
    C("search-index-a-fifo", lambda t, g: ["search", fifo(t / "g.index"), query(t, g)], "g.index", alone=True),
    C("embed-export-folder-report-json-a-fifo",
      _embed_model(lambda t, g: fifo(cp(g.export, t / "exp") / "report.json").parent), "report.json", code=(0, 1)),
    # ... JSON nested deeper than Python's recursion limit
    C("index-build-manifest-deeply-nested", _emb_damaged("build", lambda e: put(e / "manifest.json", DEEP)),
      "manifest.json", alone=True),
    C("index-build-ids-deeply-nested", _emb_damaged("build", lambda e: put(e / "ids.json", DEEP)), "ids.json",
      alone=True),
    C("index-add-ids-deeply-nested-keeps-index", _emb_damaged("add", lambda e: put(e / "ids.json", DEEP)),
      "ids.json"),
    C("train-resume-run-json-deeply-nested", _train_resume_damaged(lambda r: put(r / "run.json", DEEP)),
      "run.json"),
    C("train-resume-metrics-deeply-nested", _train_resume_damaged(lambda r: put(r / "metrics.jsonl", DEEP + "\n")),
      "metrics.jsonl"),
    # ... a run folder inside its own training images (curves.png, probe images would join them)
    C("train-out-inside-the-data-folder", lambda t, g: tiny_train(t, "--data", cp(g.images, t / "imgs"), "--out",
                                                                  t / "imgs" / "run"), "--out", alone=True),
    C("train-out-is-the-data-folder", lambda t, g: tiny_train(t, "--data", cp(g.images, t / "imgs"), "--out",
                                                              t / "imgs", "--overwrite"), "--out", alone=True),
    # ... an output that is one of the command's own inputs (it would be replaced)
    C("search-grid-is-the-index-file", lambda t, g: ["search", idx(t, g), query(t, g), "--grid", t / "g.index"],
      "--grid", alone=True),
    C("search-grid-is-the-query-image", lambda t, g: ["search", idx(t, g), query(t, g), "--grid", t / "q.png"],
      "--grid", alone=True),
    C("index-info-a-symlink-loop", lambda t, g: ["index", "info", loop(t / "g.index")], "g.index", alone=True),
    C("embed-images-a-symlink-loop", lambda t, g: ["embed", model_copy(t, g), loop(t / "imgs"), "--out",
                                                   t / "new.emb"], "imgs", alone=True),
    C("eval-run-a-symlink-loop", lambda t, g: ["eval", loop(t / "run")], "run", alone=True),
    C("search-grid-inside-a-symlink-loop", lambda t, g: ["search", idx(t, g), query(t, g), "--grid",
                                                         loop(t / "lp") / "g.png"], "lp", alone=True),
    C("bench-json-is-the-model", lambda t, g: _bench("--json", t / "model.onnx")(t, g), "--json", alone=True),
    C("bench-md-is-a-run-json", lambda t, g: _bench("--md", run_copy(t, g) / "run.json")(t, g), "--md",
      alone=True),
    # ... the gallery's own image files again, under other ids (a folder that overlaps the gallery's)
    C("index-add-the-same-files-under-other-ids-keeps-index", lambda t, g: [
        "index", "add", idx(t, g), _embedded(g.export / "model.onnx", g.images / "class0" / "..", t / "all.emb")],
      "all.emb"),
    # ... export --out into a folder that is not an export folder (its files would mix with the export's)
    C("export-out-is-the-run-folder", lambda t, g: ["export", run_copy(t, g), "--out", t / "run"], "--out",
      alone=True),
    C("export-out-is-an-images-folder", lambda t, g: ["export", run_copy(t, g), "--out", cp(g.images, t / "imgs"),
                                                      "--overwrite"], "imgs", alone=True),
    C("export-out-is-an-embeddings-folder", lambda t, g: ["export", run_copy(t, g), "--out", cp(g.emb, t / "g.emb"),
                                                          "--overwrite"], "g.emb", alone=True),
    # serve: what may be served and who may ask, refused before anything loads or listens
    C("serve-image-root-missing", lambda t, g: _serve(t, g, "--image-root", t / "photos"), "--image-root",
      "photos", alone=True),
    C("serve-image-root-is-a-file", lambda t, g: _serve(t, g, "--image-root", put(t / "a.png", "x")),
      "--image-root", "a.png", alone=True),
    C("serve-image-root-is-a-fifo", lambda t, g: _serve(t, g, "--image-root", fifo(t / "photos")), "photos",
      alone=True),
    C("serve-image-root-a-symlink-loop", lambda t, g: _serve(t, g, "--image-root", loop(t / "photos")),
      "photos", alone=True),
    C("serve-image-root-is-the-filesystem-root", lambda t, g: _serve(t, g, "--image-root", "/"),
      "--image-root", alone=True),
    C("serve-image-root-given-17-times", lambda t, g: _serve(t, g, *["--image-root", t] * 17), "--image-root",
      "16", alone=True),
    C("serve-image-root-empty-path", lambda t, g: _serve(t, g, "--image-root", ""), "--image-root",
      alone=True),
    C("serve-token-file-a-fifo", lambda t, g: _serve(t, g, "--token-file", fifo(t / "token")), "token",
      alone=True),
    C("serve-token-file-a-folder", lambda t, g: _serve(t, g, "--token-file", mkdir(t / "token")), "token",
      alone=True),
    C("serve-token-file-empty", lambda t, g: _serve(t, g, "--token-file", put(t / "token", "")), "token",
      alone=True),
    C("serve-token-file-not-utf8", lambda t, g: _serve(t, g, "--token-file", put(t / "token", b"\xff" * 12)),
      "token", alone=True),
    # --- reliability 1 the service's files (security): cases above this line ---
    # serve: a gallery that cannot be served, an address that is not this host's: refused before it listens
    C("serve-index-damaged", lambda t, g: ["serve", model_copy(t, g), "--index", flip(idx(t, g)), "--port", "0"],
      "g.index", alone=True),
    C("serve-index-truncated", lambda t, g: ["serve", model_copy(t, g), "--index", truncate(idx(t, g)), "--port",
                                             "0"], "g.index", alone=True),
    C("serve-index-empty-file", lambda t, g: ["serve", model_copy(t, g), "--index", put(t / "g.index", b""),
                                              "--port", "0"], "g.index", alone=True),
    C("serve-index-missing", lambda t, g: ["serve", model_copy(t, g), "--index", t / "none.index", "--port", "0"],
      "none.index", alone=True),
    C("serve-index-is-an-embeddings-folder", lambda t, g: ["serve", model_copy(t, g), "--index",
                                                           cp(g.emb, t / "g.emb"), "--port", "0"], "g.emb",
      alone=True),
    C("serve-model-of-another-space", lambda t, g: ["serve", cp(g.other_model, t / "other.onnx"), "--index",
                                                    idx(t, g), "--port", "0"], "space", alone=True),
    C("serve-host-not-an-address-of-this-host", lambda t, g: _serve(t, g, "--host", "192.0.2.1", "--token-file",
                                                                    _token_file(t)),
      "192.0.2.1", "not an address of this host", alone=True),
    C("serve-host-ipv6-not-of-this-host", lambda t, g: _serve(t, g, "--host", "2001:db8::1", "--token-file",
                                                              _token_file(t)),
      "2001:db8::1", alone=True),
    # --- reliability 2 the service under faults: cases above this line ---
    # every size, count and factor has a range, checked before any work (one line naming it)
    C("augment-preview-image-size-100000", lambda t, g: _preview(t, "--image-size", "100000"), "--image-size",
      "8 to 1024", RANGE, alone=True),
    C("augment-preview-views-100000", lambda t, g: _preview(t, "--views", "100000"), "--views", "1 to 16", RANGE,
      alone=True),
    C("augment-preview-images-100000", lambda t, g: _preview(t, "--images", "100000"), "--images", RANGE, alone=True),
    C("augment-preview-views-0", lambda t, g: _preview(t, "--views", "0"), "--views", RANGE, alone=True),
    C("augment-preview-seed-past-32-bits", lambda t, g: _preview(t, "--seed", str(2**64)), "--seed", RANGE, alone=True),
    C("augment-preview-images-times-views-at-1024-px", lambda t, g: _preview(
        t, "--image-size", "1024", "--images", "64", "--views", "16"), "--images", "--views", RANGE, alone=True),
    C("augment-preview-aug-size-1024-too-many-views", lambda t, g: _preview(
        t, "--aug", "size=1024", "--images", "64", "--views", "16"), "--views", RANGE, alone=True),
    C("augment-preview-aug-jitter-inf", lambda t, g: _preview(t, "--aug", "jitter=inf"), "jitter", RANGE, alone=True),
    *[C(f"train-{what}", lambda t, g, a=argv: tiny_train(t, *a), argv[0], RANGE, alone=True) for what, argv in [
        ("image-size-100000", ("--image-size", "100000")),
        ("aug-jitter-inf", ("--aug", "jitter=inf")),
        ("aug-brightness-nan", ("--aug", "brightness=nan")),
        ("aug-contrast-1e9", ("--aug", "contrast=1e9")),
        ("aug-ratio-inf", ("--aug", "ratio=0.5-inf")),
        ("aug-blur-sigma-1e308", ("--aug", "blur=0.5,blur-sigma=0.1-1e308")),
        ("aug-size-100000", ("--aug", "size=100000")),
        ("batch-size-1000000", ("--batch-size", "1000000")),
        ("batch-size-times-image-size", ("--batch-size", "4096", "--image-size", "1024")),
        ("batch-size-times-view-size", ("--batch-size", "4096", "--aug", "size=1024")),
        ("epochs-1e20", ("--epochs", str(10**20))),
        ("lr-inf", ("--lr", "inf")),
        ("lr-nan", ("--lr", "nan")),
        ("lr-1000", ("--lr", "1000")),
        ("temperature-nan", ("--temperature", "nan")),
        ("temperature-inf", ("--temperature", "inf")),
        ("temperature-1e-300", ("--temperature", "1e-300")),
        ("width-100000", ("--width", "100000")),
        ("embedding-dim-1000000", ("--embedding-dim", "1000000")),
        ("seed-past-64-bits", ("--seed", str(2**64))),
        ("limit-1e30", ("--limit", str(10**30))),
        ("classes-range-of-1e11", ("--classes", "0-99999999999")),
        ("workers-100000", ("--workers", "100000")),
        ("eval-every-1e12", ("--eval-every", str(10**12))),
        ("eval-memory-1e12", ("--eval-memory", str(10**12))),
        ("eval-queries-negative", ("--eval-queries", "-1")),
        ("save-every-steps-1e12", ("--save-every-steps", str(10**12))),
    ]],
    C("train-resume-epochs-1e20", lambda t, g: ["train", "--resume", run_copy(t, g), "--epochs", str(10**20)],
      "--epochs", RANGE, alone=True),
    *[C(f"eval-{what}", lambda t, g, a=argv: ["eval", run_copy(t, g), *a], argv[-2], RANGE, alone=True) for what, argv in [
        ("batch-100000", ("--batch", "100000")),
        ("k-1e9", ("--k", str(10**9))),
        ("workers-100000", ("--workers", "100000")),
        ("limit-1e30", ("--limit", str(10**30))),
        ("classes-range-of-1e11", ("--classes", "0-99999999999")),
        ("baseline-width-100000", ("--baseline", "untrained", "--width", "100000")),
    ]],
    *[C(f"export-{what}", _export_damaged(lambda r: None, *argv), argv[-2], RANGE, alone=True) for what, argv in [
        ("calib-count-1000000", ("--int8", "--calib-count", "1000000")),
        ("accuracy-images-1e9", ("--accuracy-images", str(10**9))),
        ("opset-1e20", ("--opset", str(10**20))),
        ("max-accuracy-drop-nan", ("--max-accuracy-drop", "nan")),
        ("allow-accuracy-drop-inf", ("--allow-accuracy-drop", "inf")),
        ("min-cosine-nan", ("--min-cosine", "nan")),
        ("engine-max-batch-100000", ("--engine", "--max-batch", "100000")),
        ("engine-workspace-1e12", ("--engine", "--workspace-mb", str(10**12))),
    ]],
    *[C(f"embed-{what}", _embed_ok(*argv), argv[-2], RANGE, alone=True) for what, argv in [
        ("batch-1000000", ("--batch", "1000000")),
        ("threads-1e10", ("--threads", str(10**10))),
        ("ray-actors-1000000", ("--ray", "auto", "--ray-actors", "1000000")),
        ("ray-gpus-per-actor-inf", ("--ray", "auto", "--ray-gpus-per-actor", "inf")),
    ]],
    *[C(f"search-{what}", _search(*argv), argv[0], RANGE, alone=True) for what, argv in [
        ("k-1e9", ("--k", str(10**9))),
        ("threads-1e10", ("--threads", str(10**10))),
        ("nprobe-1e20", ("--nprobe", str(10**20))),
        ("ef-search-1e20", ("--ef-search", str(10**20))),
    ]],
    *[C(f"index-build-{what}", lambda t, g, a=argv: ["index", "build", cp(g.emb, t / "g.emb"), "--out", t / "n.index",
                                                      *a], argv[-2], RANGE, alone=True) for what, argv in [
        ("hnsw-m-1", ("--kind", "hnsw", "--m", "1")),  # faiss crashes (SIGSEGV) on one link per node
        ("hnsw-m-100000", ("--kind", "hnsw", "--m", "100000")),
        ("hnsw-ef-search-1e20", ("--kind", "hnsw", "--ef-search", str(10**20))),
        ("ivf-nlist-1e20", ("--kind", "ivf", "--nlist", str(10**20))),
        ("ivf-nprobe-1e20", ("--kind", "ivf", "--nprobe", str(10**20))),
        ("threads-1e10", ("--kind", "flat", "--threads", str(10**10))),
    ]],
    *[C(f"bench-{what}", _bench(*argv), argv[0], RANGE, alone=True) for what, argv in [
        ("images-1000000", ("--images", "1000000")),
        ("iters-1e12", ("--iters", str(10**12))),
        ("seconds-inf", ("--seconds", "inf")),
        ("seconds-nan", ("--seconds", "nan")),
        ("warmup-1e12-calls", ("--warmup", str(10**12))),
        ("warmup-a-day", ("--warmup", "86400s")),
        ("batch-100000", ("--batch", "1,100000")),
        ("threads-1e10", ("--threads", str(10**10))),
    ]],
    C("build-engine-max-batch-100000", _engine("--max-batch", "100000"), "--max-batch", RANGE, alone=True),
    C("build-engine-workspace-1e12", _engine("--workspace-mb", str(10**12)), "--workspace-mb", RANGE, alone=True),
    *[C(f"serve-{what}", lambda t, g, a=argv: ["serve", model_copy(t, g), "--index", idx(t, g), "--port", "0", *a],
        argv[0], RANGE, alone=True) for what, argv in [
        ("queue-1e9", ("--queue", str(10**9))),
        ("max-batch-100000", ("--max-batch", "100000")),
        ("max-pixels-1e12", ("--max-pixels", str(10**12))),
        ("max-upload-mb-inf", ("--max-upload-mb", "inf")),
        ("max-wait-ms-nan", ("--max-wait-ms", "nan")),
        ("decode-threads-100000", ("--decode-threads", "100000")),
        ("k-max-1e9", ("--k-max", str(10**9))),
        ("read-timeout-inf", ("--read-timeout", "inf")),
        ("port-negative", ("--port", "-1")),
    ]],
    # --- reliability 3 inputs without a bound: cases above this line ---
    # numerically broken: a diverged run's NaN or inf weights, a model whose outputs are NaN
    C("eval-checkpoint-has-nan-weights", _eval_damaged(lambda r: poisoned(r / CKPT, "model.layer2.0.conv1.weight",
      NAN)), "checkpoint.safetensors", "layer2.0.conv1.weight"),
    C("eval-checkpoint-has-inf-batchnorm-variance", _eval_damaged(lambda r: poisoned(
        r / CKPT, "model.layer1.0.bn1.running_var", INF)), "checkpoint.safetensors", "running_var"),
    C("eval-checkpoint-weights-overflow-to-nan", _eval_damaged(lambda r: poisoned(r / CKPT, "model.fc.weight", 3e38,
      whole=True)), "run", "NaN or infinite embeddings"),
    C("export-checkpoint-has-inf-weights", _export_damaged(lambda r: poisoned(
        r / CKPT, "model.layer1.0.bn1.running_var", INF)), "checkpoint.safetensors", "running_var"),
    C("export-checkpoint-has-nan-weights", _export_damaged(lambda r: poisoned(r / CKPT, "model.conv1.weight", NAN),
                                                           "--int8"), "checkpoint.safetensors", "conv1.weight"),
    C("export-checkpoint-weights-overflow-to-nan", _export_damaged(lambda r: poisoned(
        r / CKPT, "model.fc.weight", 3e38, whole=True)), "checkpoint.safetensors", "NaN or infinite embeddings"),
    C("train-resume-checkpoint-has-nan", _train_resume_damaged(lambda r: poisoned(
        r / CKPT, "model.layer3.0.conv2.weight", NAN)), "checkpoint.safetensors", "layer3.0.conv2.weight"),
    C("train-resume-momentum-has-inf", _train_resume_damaged(lambda r: poisoned(
        r / CKPT, "optimizer.0.momentum_buffer", INF)), "checkpoint.safetensors", "optimizer state"),
    C("train-init-run-has-nan", lambda t, g: tiny_train(t, "--init", poisoned(
        run_copy(t, g) / CKPT, "model.fc.bias", NAN).parent), "checkpoint.safetensors", "fc.bias"),
    C("train-init-state-dict-has-inf", lambda t, g: tiny_train(t, "--init", poisoned(
        cp(g.run / CKPT, t / "w.safetensors"), "model.conv1.weight", -INF, keep="model.")), "w.safetensors",
      "conv1.weight"),
    C("embed-model-outputs-nan", _embed_model(lambda t, g: nonfinite_onnx(g.export / "model.onnx", t / "nan.onnx")),
      "nan.onnx", "NaN"),
    C("embed-overwrite-model-outputs-inf", lambda t, g: [
        "embed", nonfinite_onnx(g.export / "model.onnx", t / "inf.onnx", INF), cp(g.images / "class0", t / "imgs"),
        "--out", cp(g.emb, t / "g.emb"), "--overwrite"], "inf.onnx", "NaN"),
    C("search-model-outputs-nan", _search(model=lambda t, g: nonfinite_onnx(g.export / "model.onnx",
                                                                           t / "nan.onnx")), "nan.onnx", "NaN"),
    C("verify-model-outputs-nan", lambda t, g: ["verify", _nan_export(t, g)], "model.onnx", "NaN"),
    C("index-build-embeddings-hold-nan", _emb_damaged("build", _nan_rows), "embeddings.npy", "NaN"),
    C("index-add-embeddings-hold-nan", _emb_damaged("add", _nan_rows), "embeddings.npy", "NaN"),
    # --- reliability 4 numerically broken runs: cases above this line ---
    # Milvus galleries left by a command stopped midway (kill -9): refused for use with the next step, or
    # named by a warning where going on is right
    C("search-store-collection-incomplete", lambda t, g: [
        "search", "--store", stopped_store(t, g.emb, "build"), "--collection", "photos", query(t, g)],
      "photos", "incomplete", "index build", alone=True),
    C("index-add-store-collection-incomplete", lambda t, g: [
        "index", "add", "--store", stopped_store(t, g.emb, "build"), "--collection", "photos",
        cp(g.emb, t / "more.emb")], "photos", "incomplete", "index build", alone=True),
    C("index-remove-store-collection-incomplete", lambda t, g: [
        "index", "remove", "--store", stopped_store(t, g.emb, "build"), "--collection", "photos", "img00000.png"],
      "photos", "incomplete", "index build", alone=True),
    C("index-info-store-collection-incomplete", lambda t, g: [
        "index", "info", "--store", stopped_store(t, g.emb, "build"), "--collection", "photos"],
      "photos", "incomplete", "index build", code=0),
    C("serve-store-collection-incomplete", lambda t, g: [
        "serve", g.export / "model.onnx", "--store", stopped_store(t, g.emb, "build"), "--collection", "photos",
        "--port", "0", "--backend", "ort-cpu"], "photos", "incomplete", "index build"),
    C("index-build-store-incomplete-from-another-folder", lambda t, g: [
        "index", "build", cp(g.emb, t / "copy.emb"), "--store", stopped_store(t, g.emb, "build"),
        "--collection", "photos"], "photos", "copy.emb", "--overwrite"),
    C("search-store-collection-is-a-temporary", lambda t, g: [
        "search", "--store", stopped_store(t, g.emb, "temporary"), "--collection", TEMPORARY, query(t, g)],
      TEMPORARY, "--collection photos", alone=True),
    C("search-store-collection-missing-after-a-stopped-swap", lambda t, g: [
        "search", "--store", stopped_store(t, g.emb, "swap"), "--collection", "photos", query(t, g)],
      "photos", TEMPORARY, "--overwrite", alone=True),
    C("search-store-an-add-stopped-midway", lambda t, g: [
        "search", "--store", stopped_store(t, g.emb, "add", t / "more.emb"), "--collection", "photos",
        query(t, g)], "more.emb", "index add", code=0),
    # --- reliability 5 Milvus galleries: partial builds and leftovers: cases above this line ---
    # an export folder whose files differ from what its report.json records (size, sha256): refused,
    # naming the file and the export that rebuilds it; the probe set against its hashes
    C("verify-int8-cpu-truncated", _verify(lambda e: truncate(e / "model.int8-cpu.onnx")), "model.int8-cpu.onnx",
      "--overwrite"),
    C("verify-artifact-one-byte-flipped", _verify(lambda e: flip(e / "model.int8-cpu.onnx")), "model.int8-cpu.onnx",
      "--overwrite"),
    C("verify-fp32-one-byte-flipped", _verify(lambda e: flip(e / "model.onnx")), "model.onnx", "sha256"),
    C("verify-two-artifacts-truncated", _verify(lambda e: [truncate(e / n) for n in ("model.int8.onnx",
                                                                                      "model.fp16.onnx")]),
      "model.int8.onnx", "model.fp16.onnx"),
    C("verify-precision-of-a-flipped-artifact", _verify(lambda e: flip(e / "model.fp16.onnx"), "--precision", "fp16"),
      "model.fp16.onnx", alone=True),
    C("verify-artifact-file-one-byte-flipped", lambda t, g: [
        "verify", _damaged_export(t, g, lambda e: flip(e / "model.int8.onnx")) / "model.int8.onnx",
        "--backend", "ort-cpu"], "model.int8.onnx", alone=True),
    C("verify-probe-set-damaged", _verify(lambda e: flip(e / "probes" / "fp32.npy")), "fp32.npy", alone=True),
    C("verify-probe-image-one-byte-flipped", _verify(lambda e: flip(e / "probes" / "000.png")), "000.png",
      alone=True),
    C("verify-probe-image-missing", _verify(lambda e: (e / "probes" / "005.png").unlink()), "005.png", alone=True),
    C("verify-probe-manifest-threshold-edited", _verify(_threshold_loosened), "probes.json", alone=True),
    C("embed-artifact-one-byte-flipped", _embed_model(lambda t, g: _damaged_export(
        t, g, lambda e: flip(e / "model.int8-cpu.onnx"))), "model.int8-cpu.onnx", "--overwrite", alone=True),
    C("embed-artifact-file-one-byte-flipped", _embed_model(lambda t, g: _damaged_export(
        t, g, lambda e: flip(e / "model.onnx")) / "model.onnx"), "model.onnx", alone=True),
    C("embed-artifact-it-would-not-run-truncated", _embed_model(lambda t, g: _damaged_export(
        t, g, lambda e: truncate(e / "model.int8.onnx"))), "model.int8.onnx", alone=True),
    C("build-engine-artifact-one-byte-flipped", _engine(model=lambda t, g: _damaged_export(
        t, g, lambda e: flip(e / "model.int8.onnx")) / "model.int8.onnx"), "model.int8.onnx", alone=True),
    C("build-engine-folder-artifact-one-byte-flipped", _engine(model=lambda t, g: _damaged_export(
        t, g, lambda e: flip(e / "model.int8.onnx"))), "model.int8.onnx", alone=True),
    # --- reliability 6 damaged artifacts: cases above this line ---
    # what a swap keeps beside a folder (.NAME.old, .NAME.replaced, probes' .probes.old) that is not the old
    # folder it left: named before any work, never deleted or renamed into place
    C("embed-overwrite-old-copy-is-a-file", lambda t, g: [
        "embed", model_copy(t, g), cp(g.images / "class0", t / "imgs"), "--out",
        _old_copy(t, g, lambda a: put(a, "not a folder")), "--overwrite"], ".g.emb.old", alone=True),
    C("embed-overwrite-old-copy-is-a-link", lambda t, g: [
        "embed", model_copy(t, g), cp(g.images / "class0", t / "imgs"), "--out",
        _old_copy(t, g, lambda a: a.symlink_to(cp(g.emb, t / "elsewhere.emb"))), "--overwrite"], ".g.emb.old",
      alone=True),
    C("embed-retry-failed-old-copy-is-a-file", lambda t, g: [
        "embed", g.export / "model.onnx", g.images / "class0", "--out",  # what made g.emb: only .old is wrong
        _old_copy(t, g, lambda a: put(a, "not a folder")), "--retry-failed"], ".g.emb.old", alone=True),
    C("train-overwrite-replaced-copy-is-a-file", lambda t, g: tiny_train(
        t, "--overwrite", out=(put(t / ".run.replaced", "not a folder"), run_copy(t, g))[1]), ".run.replaced",
      alone=True),
    C("export-old-probe-set-copy-is-a-file", lambda t, g: [
        "export", run_copy(t, g), "--out", _damaged_export(t, g, lambda e: put(e / ".probes.old", "x")),
        "--overwrite"], ".probes.old"),
    # --- reliability 7 leftovers and messages: cases above this line ---
]
# fmt: on


def _placeholders(argv: list[object], t: Path) -> list[str]:
    """Some options name a path that the case has to make first (kept out of the table for brevity)."""
    out = []
    for a in argv:
        if a == "GRID":
            a = put(t / "grid.png", "x") / "grid.png"  # grid.png is a file: its child cannot be written
        elif a == "NOPE":
            a = t / "nope"
        elif a == "PARENTFILE":
            a = put(t / "f.txt", "x") / "table.md"
        elif a == "FOLDER":
            (t / "plot.png").mkdir()
            a = t / "plot.png"
        out.append(str(a))
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every file under `folder` (hidden ones too)."""
    found = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_corpus_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 80
    verbs = {c.id.split("-")[0] for c in CASES}
    assert {"train", "eval", "export", "embed", "index", "search", "bench", "build"} <= verbs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_keeps_every_file(case, good, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)  # a command that picks a default output writes here, where it is checked
    argv = _placeholders(case.build(work, good), work)
    if any(a.startswith(f"{UNWRITABLE}/") for a in argv) and not UNWRITABLE.is_dir():
        pytest.skip(f"needs {UNWRITABLE} (Linux) as a place nobody can write to")
    before = snapshot(work)
    capsys.readouterr()

    code = invedge(*argv)
    err = capsys.readouterr().err

    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    allowed = case.code if isinstance(case.code, tuple) else (case.code,)
    assert code in allowed, f"exit {code}, stderr:\n{err}"
    after = snapshot(work)
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert not changed, f"changed or removed: {changed}"
    if code == 0:  # a case where going on is right: say so when something was left out
        warnings = " ".join(line for line in lines if line.startswith("warning:"))
        assert not case.warned or _names(warnings, case.names) is None, f"no warning names it:\n{err}"
        return
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"{len(errors)} error lines:\n{err}"
    line = errors[0]
    assert lines[-1] == line, f"the error is not the last line:\n{err}"
    if case.alone:
        assert lines == [line], f"the command printed before rejecting the input:\n{err}"
    missing = _names(line, case.names)
    assert missing is None, f"does not name {missing!r}: {line}"
    assert NEXT_STEP.search(line.removeprefix("error:")), f"no next step after the problem: {line}"
    left = sorted(p for p in set(after) - set(before) if not re.fullmatch(r"(.*/)?\.[^/]+\.lock", p))
    assert not left, f"left behind: {left}"


def test_the_error_line_is_all_of_stderr_not_even_a_blank_line_before_it(good, tmp_path, capsys):
    """A transient progress bar started before the error (eval's) leaves nothing on a non-terminal
    stderr: the one error line is the whole of it (the corpus above ignores blank lines)."""
    capsys.readouterr()
    code = invedge("eval", good.run, "--data", good.images, "--k", "0")
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error:") and err.count("\n") == 1, repr(err)
