"""The probe set (invspread_edge_runtime/verify/probes.py, verify/backend.py) and `invedge verify`: written at export, checked on every backend.

What these show on the CPU: export writes the probe files with their hashes; every artifact of a
small export passes on ort-cpu; a backend whose outputs are perturbed (a double: it stands in for a
bad engine) fails with its figures; damaged probe files are refused in one line; ONNX Runtime's
TensorRT provider (a double of its session) keeps no cached engine after a failed check; the
native TensorRT build does the same against the real TensorRT API (native_tensorrt/real_api/check_verify.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import EMBEDDING_ATOL, REPO, TRT_API

from invspread_edge_runtime.backends.base import Backend
from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embedder import open_backend
from invspread_edge_runtime.errors import DataError, ModelError
from invspread_edge_runtime.evaluation.accuracy import top1_agreement
from invspread_edge_runtime.files import sha256_file
from invspread_edge_runtime.metadata import read_model_meta
from invspread_edge_runtime.verify import backend as verify
from invspread_edge_runtime.verify.engines import PROBE_CHECK
from invspread_edge_runtime.verify.probes import (
    DEFAULT_COUNT,
    EMBEDDINGS,
    FORMAT,
    MANIFEST,
    PROBE_DIR,
    THRESHOLDS,
    load_probe_set,
    write_probe_set,
)

ARTIFACTS = {
    "fp32": "model.onnx",
    "fp16": "model.fp16.onnx",
    "int8": "model.int8.onnx",
    "int8-cpu": "model.int8-cpu.onnx",
}


def invedge(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(create_app(), [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *fragments: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], err


@pytest.fixture
def export_copy(tiny_export, tmp_path) -> Path:
    """A private copy of the session's tiny export, free to damage."""
    return Path(shutil.copytree(tiny_export, tmp_path / "export", ignore=shutil.ignore_patterns(".*")))


class Perturbed(Backend):
    """A real ort-cpu backend whose outputs get noise of `scale` × their norm: a bad engine."""

    def __init__(self, inner: Backend, scale: float, seed: int = 0) -> None:
        self.inner, self.scale, self.info = inner, scale, inner.info
        self.meta = getattr(inner, "meta", None)
        self.rng = np.random.default_rng(seed)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer(batch)
        noise = self.rng.standard_normal(out.shape).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True) / np.sqrt(out.shape[1])
        return out + self.scale * norms * noise

    def close(self) -> None:
        self.inner.close()


# --- export writes the probe set --------------------------------------------------------------------


def test_export_writes_the_probe_set_with_hashes(tiny_export):
    folder = tiny_export / PROBE_DIR
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == FORMAT and manifest["count"] == DEFAULT_COUNT
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [e["file"] for e in manifest["images"]]
    for entry in manifest["images"]:
        assert sha256_file(folder / entry["file"]) == entry["sha256"]
        assert entry["id"].startswith("fashion-mnist:train:")  # the calibration manifest's images
    assert sha256_file(folder / EMBEDDINGS) == manifest["embeddings"]["sha256"]
    emb = np.load(folder / EMBEDDINGS, allow_pickle=False)
    assert emb.shape == (32, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    fp32 = read_model_meta(tiny_export / "model.onnx")
    assert manifest["checkpoint_sha256"] == fp32.checkpoint_sha256
    assert manifest["reference"] == {
        "file": "model.onnx",
        "sha256": sha256_file(tiny_export / "model.onnx"),
        "backend": "ort-cpu",
        "precision": "fp32",
    }
    assert set(manifest["thresholds"]) >= set(ARTIFACTS)
    assert manifest["thresholds"]["int8"]["mean_cosine"] == 0.98  # the export's --min-cosine
    # the export checked every artifact on ort-cpu against the probes and kept the figures
    assert {p: c["status"] for p, c in manifest["export_check"].items()} == {p: "pass" for p in ARTIFACTS}


def test_the_probe_folder_is_as_readable_as_the_models(tiny_export):
    """Built in a mkdtemp folder (mode 0700) and renamed into place: it gets the umask's mode, like
    model.onnx beside it, so another user (a service running 'invedge verify') can read it."""
    probes = (tiny_export / PROBE_DIR).stat().st_mode & 0o777
    model = (tiny_export / "model.onnx").stat().st_mode & 0o777
    assert probes & 0o444 == (model & 0o444), (oct(probes), oct(model))


def test_the_fp32_embeddings_are_the_runtime_embedding_of_the_probe_files(tiny_export):
    """Decode + preprocessing as shipped: the Embedder on the PNG files gives the stored vectors."""
    from invspread_edge_runtime.embedder import Embedder

    probes = load_probe_set(tiny_export)
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as embedder:
        again = embedder.embed(list(probes.paths))  # in other batches, on other threads than the export's
    np.testing.assert_allclose(again, probes.embeddings, rtol=0, atol=EMBEDDING_ATOL)


# --- every artifact passes on ort-cpu ---------------------------------------------------------------


def test_every_artifact_passes_on_ort_cpu(capsys, tiny_export):
    code, out, err = invedge(capsys, "verify", tiny_export, "--backend", "ort-cpu", "--json")
    assert code == 0, err
    doc = json.loads(out)
    results = {r["precision"]: r for r in doc["results"]}
    assert set(results) == set(ARTIFACTS) and doc["errors"] == []
    for precision, r in results.items():
        assert r["status"] == "pass", r
        assert r["model_file"] == ARTIFACTS[precision] and r["backend"] == "ort-cpu" and r["probes"] == 32
        assert r["mean_cosine"] >= r["thresholds"]["mean_cosine"]
    assert results["fp32"]["mean_cosine"] > 0.99999  # the reference itself, on the same backend


def test_the_table_names_each_artifact(capsys, tiny_export):
    code, out, err = invedge(capsys, "verify", tiny_export / "model.int8.onnx", "--backend", "ort-cpu")
    assert code == 0, err
    assert "model.int8.onnx" in out and "pass" in out and "≥ 0.98" in out
    assert "model.onnx " not in out  # one .onnx file given: that artifact alone


# --- a bad engine fails with its figures --------------------------------------------------------------


def test_a_perturbed_backend_fails_with_the_figures(tiny_export):
    probes = load_probe_set(tiny_export)
    path = tiny_export / "model.int8.onnx"
    with Perturbed(open_backend(path, "ort-cpu", precision="int8"), scale=1.0) as bad:
        result = verify.verify_backend(bad, probes)
    assert not result.passed and result.mean_cosine < 0.98
    assert any(f.startswith("mean cosine") for f in result.failures)
    with pytest.raises(verify.VerifyFailed) as exc:
        verify.require_pass(result)
    message = str(exc.value)
    assert f"mean cos {result.mean_cosine:.5f}" in message and f"min {result.min_cosine:.5f}" in message
    assert "top-1 agreement" in message and "< 0.98" in message
    assert "--calib-method" in exc.value.hint and "--precision fp16" in exc.value.hint
    print(message)


def test_verify_exits_1_for_a_bad_backend(capsys, tiny_export, monkeypatch):
    import invspread_edge_runtime.backends.select as select

    real = select.open_backend

    def bad_open(model, backend="auto", **kwargs):
        return Perturbed(real(model, backend, **kwargs), scale=1.0)

    monkeypatch.setattr(select, "open_backend", bad_open)
    code, out, err = invedge(capsys, "verify", tiny_export, "--backend", "ort-cpu", "--precision", "fp16")
    assert code == 1
    one_line_error(err, "model.fp16.onnx (fp16) on ort-cpu fails its probe check", "mean cos 0.", "< 0.999")
    assert "fail" in out  # the table is printed before the error


def test_nan_outputs_fail(tiny_export):
    probes = load_probe_set(tiny_export)
    result = verify.measure(
        probes.embeddings,
        np.full_like(probes.embeddings, np.nan),
        THRESHOLDS["fp32"],
        precision="fp32",
    )
    assert not result.passed and len(result.failures) == 4
    assert result.failures[0] == "NaN or infinite embeddings for 32 of 32 probes"
    with pytest.raises(verify.VerifyFailed, match=r"mean cos nan, min nan, top-1 agreement nan/32"):
        verify.require_pass(result)
    assert result.to_dict()["mean_cosine"] is None  # JSON has no NaN


def test_top1_agreement_counts_near_ties_but_not_wrong_neighbours():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((32, 16)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ref[1] = ref[0] + 1e-4 * rng.standard_normal(16)  # probes 0 and 1: a near-duplicate pair
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert top1_agreement(ref, ref, ties=True) == top1_agreement(ref, ref) == 1.0
    shuffled = ref[rng.permutation(32)]  # every probe's neighbour is now a stranger
    tied, strict = top1_agreement(ref, shuffled, ties=True), top1_agreement(ref, shuffled)
    assert tied < 0.5 and strict < 0.5
    tied = top1_agreement(ref, shuffled, ties=True, accepted_cosine=0.98)  # int8's floor: strangers still
    assert tied < 0.5


def test_an_untrained_networks_probes_are_all_ties_at_the_accepted_error():
    """Embeddings that all point one way (an untrained network: every similarity above 0.999) reorder
    on any noise; int8-sized noise (cosine 0.9998, far inside int8's 0.98) must not fail the check, on
    whichever CPU the int8 kernels round differently."""
    rng = np.random.default_rng(1)
    ref = np.ones((32, 32)) + 0.02 * rng.standard_normal((32, 32))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    noisy = ref + 0.015 * rng.standard_normal((32, 32)) / np.sqrt(32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    assert (ref @ ref.T).min() > 0.999 and (noisy * ref).sum(axis=1).min() > 0.9995
    strict = top1_agreement(ref, noisy)
    assert strict < 0.8  # the order of near-ties is noise
    tied = top1_agreement(ref, noisy, ties=True, accepted_cosine=0.98)
    assert tied == 1.0


# --- damaged probe files are refused ------------------------------------------------------------------


def _flip_a_byte(folder: Path) -> str:
    path = folder / "003.png"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    return "003.png does not match its sha256"


def _delete_an_image(folder: Path) -> str:
    (folder / "010.png").unlink()
    return "010.png is missing"


def _rewrite_manifest(folder: Path, edit) -> None:
    """Edit probes.json and record its new sha256 in report.json: the checks behind that hash."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    report = folder.parent / "report.json"
    doc = json.loads(report.read_text())
    doc["probes"]["sha256"] = sha256_file(path)
    report.write_text(json.dumps(doc))


def _wrong_shape(folder: Path) -> str:
    np.save(folder / EMBEDDINGS, np.zeros((32, 7), np.float32), allow_pickle=False)
    _rewrite_manifest(folder, lambda m: m["embeddings"].update(sha256=sha256_file(folder / EMBEDDINGS)))
    return "(32, 7); (32, 32) finite float32 expected"


def _pickled(folder: Path) -> str:
    np.save(folder / EMBEDDINGS, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _rewrite_manifest(folder, lambda m: m["embeddings"].update(sha256=sha256_file(folder / EMBEDDINGS)))
    return "not a readable .npy file"


def _wrong_image_size(folder: Path) -> str:
    from PIL import Image

    Image.new("RGB", (30, 30)).save(folder / "000.png")
    _rewrite_manifest(folder, lambda m: m["images"][0].update(sha256=sha256_file(folder / "000.png")))
    return "000.png is 30x30, not 28x28"


def _manifest_not_json(folder: Path) -> str:
    (folder / MANIFEST).write_text("{truncated")
    return "not valid JSON"


def _manifest_escapes(folder: Path) -> str:
    _rewrite_manifest(folder, lambda m: m["images"][0].update(file="../model.onnx"))
    return "file name '../model.onnx'"


def _no_probe_set(folder: Path) -> str:
    shutil.rmtree(folder)
    return "no probe set in"


@pytest.mark.parametrize(
    "damage",
    [
        _flip_a_byte,
        _delete_an_image,
        _wrong_shape,
        _pickled,
        _wrong_image_size,
        _manifest_not_json,
        _manifest_escapes,
        _no_probe_set,
    ],
)
def test_damaged_probe_files_are_refused_in_one_line(capsys, export_copy, damage):
    fragment = damage(export_copy / PROBE_DIR)
    with pytest.raises(DataError, match=None) as exc:
        load_probe_set(export_copy)
    assert fragment in str(exc.value)
    code, out, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu")
    assert code == 1 and out == ""
    one_line_error(err, fragment)


def test_a_probe_set_of_another_model_is_refused(tmp_path, tiny_export, make_tiny_onnx):
    other = make_tiny_onnx(tmp_path / "other" / "model.onnx", embedding_dim=32)
    shutil.copytree(tiny_export / PROBE_DIR, tmp_path / "other" / PROBE_DIR)
    probes = load_probe_set(other)
    with (
        open_backend(other, "ort-cpu") as backend,
        pytest.raises(ModelError, match="made from another model"),
    ):
        verify.verify_backend(backend, probes)


def test_a_failed_write_keeps_the_old_probe_set(export_copy, monkeypatch):
    import invspread_edge_runtime.preprocess as preprocess

    before = sha256_file(export_copy / PROBE_DIR / EMBEDDINGS)

    def broken(paths, size):
        raise DataError("decoder exploded")

    monkeypatch.setattr(preprocess, "load_uint8", broken)
    images = load_probe_set(export_copy).paths
    from PIL import Image

    with pytest.raises(DataError, match="decoder exploded"):
        write_probe_set(
            export_copy, export_copy / "model.onnx", [Image.open(p) for p in images], list(map(str, images))
        )
    assert sha256_file(export_copy / PROBE_DIR / EMBEDDINGS) == before
    assert [p.name for p in export_copy.iterdir() if p.name.startswith(".probes")] == []


# --- ONNX Runtime's TensorRT provider: a double of its session ------------------------------------------


class FakeTrtSession:
    """Stands in for an ONNX Runtime session on the TensorRT provider: at creation it writes an engine
    and a profile into trt_engine_cache_path (as the provider does), then runs the model on the CPU,
    with its outputs perturbed when `bad`."""

    bad = False

    def __init__(self, path, options, providers):
        import onnxruntime

        name, trt_options = providers[0]
        assert name == "TensorrtExecutionProvider" and trt_options["trt_engine_cache_enable"]
        cache = Path(trt_options["trt_engine_cache_path"])
        stem = f"TensorrtExecutionProvider_TRTKernel_graph_main_{sha256_file(path)[:8]}_0_0_sm90"
        (cache / f"{stem}.engine").write_bytes(b"engine")
        (cache / f"{stem}.profile").write_bytes(b"profile")
        (cache / "TensorrtExecutionProvider_cache_sm90.timing").write_bytes(b"timing")
        self.inner = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.rng = np.random.default_rng(0)

    def get_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, names, feeds):
        out = self.inner.run(names, feeds)
        if self.bad:
            out = [o + self.rng.standard_normal(o.shape).astype(o.dtype) * np.abs(o).mean() for o in out]
        return out


@pytest.fixture
def fake_ort_trt(monkeypatch):
    import onnxruntime

    from invspread_edge_runtime.backends import ort

    class FakeOrt:
        __version__ = onnxruntime.__version__
        SessionOptions = onnxruntime.SessionOptions
        GraphOptimizationLevel = onnxruntime.GraphOptimizationLevel
        InferenceSession = FakeTrtSession

        @staticmethod
        def get_available_providers():
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(ort, "import_ort", lambda: FakeOrt)
    monkeypatch.setattr(FakeTrtSession, "bad", False)
    return FakeTrtSession


def test_ort_trt_engine_that_passes_is_kept(fake_ort_trt, export_copy, tmp_path):
    from invspread_edge_runtime.backends import ort_cache
    from invspread_edge_runtime.backends.ort import OrtBackend

    cache = tmp_path / "cache"
    backend = OrtBackend(export_copy / "model.int8.onnx", "ort-trt", cache_dir=cache, check=PROBE_CHECK)
    backend.close()
    (engine,) = cache.rglob("*.engine")
    assert (engine.parent / ort_cache.SIDECAR).is_file()  # keyed, so the next session reuses it


def test_ort_trt_engine_that_fails_leaves_no_cached_engine(fake_ort_trt, export_copy, tmp_path):
    from invspread_edge_runtime.backends.ort import OrtBackend

    fake_ort_trt.bad = True
    cache = tmp_path / "cache"
    with pytest.raises(
        verify.VerifyFailed, match=r"ONNX Runtime TensorRT engine built from model.int8.onnx fails"
    ) as exc:
        OrtBackend(export_copy / "model.int8.onnx", "ort-trt", cache_dir=cache, check=PROBE_CHECK)
    assert "its cache folder was emptied" in exc.value.message and "mean cos 0." in exc.value.message
    assert [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_ort_trt_cached_engine_that_fails_is_removed(fake_ort_trt, export_copy, tmp_path):
    """An engine that passed once, then fails (the same slot reused): the slot is emptied."""
    from invspread_edge_runtime.backends.ort import OrtBackend

    cache = tmp_path / "cache"
    first = OrtBackend(export_copy / "model.int8.onnx", "ort-trt", cache_dir=cache, check=PROBE_CHECK)
    first.close()
    fake_ort_trt.bad = True
    with pytest.raises(verify.VerifyFailed):
        OrtBackend(export_copy / "model.int8.onnx", "ort-trt", cache_dir=cache, check=PROBE_CHECK)
    assert list(cache.rglob("*.engine")) == [] and list(cache.rglob("invedge-cache.json")) == []


# --- invedge bench shows the probe check per row --------------------------------------------------------


def test_bench_rows_carry_the_verify_result(tiny_export):
    from invspread_edge_runtime.bench.harness import TimingPlan
    from invspread_edge_runtime.bench.images import load_bench_images
    from invspread_edge_runtime.bench.report import COLUMNS
    from invspread_edge_runtime.bench.runner import BenchSettings, run_bench
    from invspread_edge_runtime.bench.target import resolve_target

    settings = BenchSettings(
        runtimes=["ort-cpu"],
        precisions=["fp32", "int8"],
        batches=[4],
        plan=TimingPlan(1, 0.0, 2, None),
        threads=1,
        accuracy=False,
    )
    rows = run_bench(resolve_target(tiny_export), load_bench_images("fashion-mnist", 8), settings).rows
    assert [r.verify.split()[0] for r in rows] == ["pass", "pass"]
    assert float(rows[0].verify.split()[1]) > 0.9999
    column = dict(COLUMNS)["verify"]
    assert column(rows[0]) == rows[0].verify


# --- the native TensorRT build, against the real TensorRT API (doubles of its GPU-bound classes) --------


def _trt_prepare():
    spec = importlib.util.spec_from_file_location("trt_prepare_verify", TRT_API / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_native_tensorrt_build_runs_the_probe_check(version, tmp_path):
    prepare = _trt_prepare()
    try:
        install = prepare.prepare(version)
    except prepare.Unavailable as exc:
        pytest.skip(f"TensorRT {version} API checks skipped: {exc}")
    repo = REPO
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(repo),
    ]
    cmd += ["--basetemp", str(tmp_path / "checks"), str(TRT_API / "check_verify.py")]
    proc = subprocess.run(cmd, cwd=repo, env=install.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout
