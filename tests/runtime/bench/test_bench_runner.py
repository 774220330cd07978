"""The table runner on fake runtimes: statuses, reasons, timing fields and accuracy columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.bench.harness import TimingPlan
from invspread_edge_runtime.bench.images import load_bench_images
from invspread_edge_runtime.bench.registry import (
    NotPresent,
    register_runtime,
    runtimes,
    unregister_runtime,
)
from invspread_edge_runtime.bench.runner import BenchSettings, default_precisions, run_bench
from invspread_edge_runtime.bench.target import BenchTarget
from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.metadata import ModelMeta

META = ModelMeta(
    arch="fake",
    image_size=28,
    embedding_dim=16,
    mean=(0.286,) * 3,
    std=(0.353,) * 3,
    checkpoint_sha256="0" * 64,
    toolkit_version="0",
)


class ProjectionBackend(Backend):
    """A fixed random projection of the pixels, L2-normalised; `noise` mimics a lower precision."""

    def __init__(self, precision: str, noise: float = 0.0, fail_at_batch: int | None = None) -> None:
        self.info = BackendInfo("fake", "cpu", precision, "fake.onnx")
        self.weights = np.random.default_rng(0).standard_normal((3 * 28 * 28, 16)).astype(np.float32)
        self.noise, self.fail_at_batch, self.closed = noise, fail_at_batch, False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.fail_at_batch is not None and len(batch) == self.fail_at_batch:
            raise RuntimeError("kernel exploded")
        y = batch.reshape(len(batch), -1) @ self.weights
        y += self.noise * np.random.default_rng(len(batch)).standard_normal(y.shape).astype(np.float32)
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    def close(self) -> None:
        self.closed = True


OPENED: list[ProjectionBackend] = []


def _open_ok(target, precision, options):
    backend = ProjectionBackend(precision, noise=0.0 if precision == "fp32" else 3.0)
    OPENED.append(backend)
    return backend


def _open_broken(target, precision, options):
    raise RuntimeError("boom: cannot load")


def _open_flaky(target, precision, options):
    return ProjectionBackend(precision, fail_at_batch=4)


def _open_picky(target, precision, options):
    raise NotPresent("needs a thing this machine lacks")


@pytest.fixture
def fakes():
    register_runtime("fake-ok", _open_ok, precisions=("fp32", "int8"))
    register_runtime(
        "fake-absent", _open_ok, precisions=("fp32",), probe=lambda t: "no such accelerator here"
    )
    register_runtime("fake-broken", _open_broken, precisions=("fp32",))
    register_runtime("fake-flaky", _open_flaky, precisions=("fp32",))
    register_runtime("fake-picky", _open_picky, precisions=("fp32",))
    OPENED.clear()
    yield
    for name in ("fake-ok", "fake-absent", "fake-broken", "fake-flaky", "fake-picky"):
        unregister_runtime(name)


@pytest.fixture(scope="module")
def pics():
    return load_bench_images("fashion-mnist", 60)


TARGET = BenchTarget(source=Path("fake.onnx"), meta=META, artifacts={})
PLAN = TimingPlan(warmup_iters=2, iters=6, seconds=None)


def rows_by(report, runtime):
    return [r for r in report.rows if r.runtime == runtime]


def test_rows_for_every_status(fakes, pics):
    settings = BenchSettings(
        runtimes=["fake-ok", "fake-absent", "fake-broken", "fake-flaky", "fake-picky"],
        batches=[1, 4],
        plan=PLAN,
    )
    report = run_bench(TARGET, pics, settings, environment={"cpu": {}})

    ok = rows_by(report, "fake-ok")
    assert [(r.precision, r.batch, r.status) for r in ok] == [
        ("fp32", 1, "ok"), ("fp32", 4, "ok"), ("int8", 1, "ok"), ("int8", 4, "ok"),
    ]  # fmt: skip
    assert all(b.closed for b in OPENED) and len(OPENED) == 2
    for row in ok:
        assert row.samples == 6 and row.warmup == 2
        assert row.min_ms <= row.p50_ms <= row.p90_ms <= row.p99_ms <= row.max_ms
        assert row.e2e_p50_ms <= row.e2e_p90_ms <= row.e2e_p99_ms
        assert row.e2e_throughput_ips == pytest.approx(row.batch * 1000 / row.e2e_mean_ms)
        assert row.device_p50_ms is None  # a CPU backend records no device time
        assert row.cold_start_ms == pytest.approx(row.load_ms + row.first_infer_ms)
        assert row.throughput_ips == pytest.approx(row.batch * 1000 / row.mean_ms)

    (absent,) = rows_by(report, "fake-absent")
    assert (absent.status, absent.reason, absent.precision, absent.batch) == (
        "not present", "no such accelerator here", None, None,
    )  # fmt: skip
    (broken,) = rows_by(report, "fake-broken")
    assert broken.status == "failed" and "boom: cannot load" in broken.error
    flaky = rows_by(report, "fake-flaky")
    assert [(r.batch, r.status) for r in flaky] == [(1, "ok"), (4, "failed")]
    assert "kernel exploded" in flaky[1].error and flaky[1].p50_ms is None
    (picky,) = rows_by(report, "fake-picky")
    assert picky.status == "not present" and "lacks" in picky.reason


def test_accuracy_against_the_fp32_reference(fakes, pics):
    report = run_bench(TARGET, pics, BenchSettings(runtimes=["fake-ok"], batches=[8], plan=PLAN))
    fp32, int8 = rows_by(report, "fake-ok")
    assert fp32.cosine_min == pytest.approx(1.0) and fp32.top1_agreement == 1.0
    assert int8.cosine_min < int8.cosine_mean < 1.0 and 0.0 <= int8.top1_agreement < 1.0
    for row in (fp32, int8):
        assert 0.0 <= row.knn_acc <= 1.0 and 0.0 <= row.recall_at_1 <= 1.0
    assert report.settings["reference"] == "fp32 on fake-ok"
    assert "leave-one-out" in report.settings["knn"]


def test_explicit_precision_a_runtime_cannot_run(fakes, pics):
    settings = BenchSettings(
        runtimes=["fake-broken"], precisions=["int8"], batches=[1], plan=PLAN, accuracy=False
    )
    (row,) = run_bench(TARGET, pics, settings).rows
    assert row.status == "not present" and "does not run int8" in row.reason


def test_records_have_environment_first_and_uniform_rows(fakes, pics):
    settings = BenchSettings(runtimes=["fake-ok", "fake-absent"], batches=[2], plan=PLAN, threads=1)
    records = run_bench(TARGET, pics, settings, environment={"python": "3"}).records()
    env, rows = records[0], records[1:]
    assert env["record"] == "environment" and env["python"] == "3"
    assert env["bench"]["threads"] == 1 and "1 intra-op threads" in env["bench"]["threads_line"]
    assert env["bench"]["images"] == 60 and env["bench"]["labelled"] is True
    assert len({tuple(r) for r in rows}) == 1  # every row has the same keys, null where not measured


def test_unknown_runtime(fakes, pics):
    with pytest.raises(InvedgeError, match="Invalid runtime 'nope'"):
        run_bench(TARGET, pics, BenchSettings(runtimes=["nope"], plan=PLAN))


def test_builtin_defaults_follow_the_artifacts():
    target = BenchTarget(
        source=Path("x"), meta=META, artifacts={"fp32": Path("a"), "int8": Path("b"), "int8-cpu": Path("c")}
    )
    specs = runtimes()
    assert default_precisions(specs["ort-cpu"], target) == ["fp32", "int8", "int8-cpu"]
    assert default_precisions(specs["trt"], target) == ["fp32", "int8"]  # TensorRT takes no CPU artifact


def test_runtime_without_runnable_artifact_gets_one_row(pics):
    target = BenchTarget(source=Path("x"), meta=META, artifacts={"int8-cpu": Path("c")})
    settings = BenchSettings(runtimes=["trt"], batches=[1], plan=PLAN)
    (row,) = run_bench(target, pics, settings).rows
    assert row.status == "not present" and row.precision is None and row.reason


def test_torch_runtimes_listed_without_the_full_toolkit(pics):
    unregister_runtime("torch")
    settings = BenchSettings(runtimes=["torch"], batches=[1], plan=PLAN)
    (row,) = run_bench(TARGET, pics, settings).rows
    assert row.status == "not present" and "full toolkit" in row.reason
    assert list(runtimes())[:6] == ["ort-cpu", "ort-cuda", "ort-trt", "trt", "torch", "torch-compile"]
