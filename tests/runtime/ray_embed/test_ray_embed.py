"""`invedge embed --ray` on a local Ray (2 CPUs, one start for the module): the single-process folder,
exactly, also after an interruption, a rerun and a killed worker; and one-line errors without Ray."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import EMBEDDING_ATOL

from invspread_edge_runtime import hooks
from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embeddings.corpus import EmbeddingInterrupted, EmbedOptions
from invspread_edge_runtime.embeddings.job import embed_images
from invspread_edge_runtime.embeddings.ray_embed import init_ray
from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.errors import EmbeddingsError

BATCH = 8  # 41 images: 6 batches, so that a run can be cut, and a worker killed, in its middle
INVEDGE = Path(sys.executable).parent / "invedge"


# One Ray cluster at a time on this machine: two xdist workers starting theirs together (this
# module split across them) left one raylet unstarted and ray.init timing out (seen in CI).
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (a start costs seconds): `embed --ray` runs on this connection."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    init_ray(ray, num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(image_folder, tmp_path_factory) -> Path:
    """The 40 real images plus one that cannot be read."""
    root = tmp_path_factory.mktemp("ray") / "photos"
    shutil.copytree(image_folder, root)
    (root / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


@pytest.fixture(scope="module")
def single(tiny_export, photos, tmp_path_factory):
    """The single-process folder of the same images: what every Ray run must equal."""
    out = tmp_path_factory.mktemp("single") / "photos.emb"
    embed_images(EmbedOptions(tiny_export, [photos], out, batch=BATCH))
    return load_embeddings(out)


def on_ray(tiny_export, photos, out, on_start=None, on_progress=None, **options):
    options = EmbedOptions(tiny_export, [photos], out, batch=BATCH, ray="auto", **options)
    return embed_images(options, on_start=on_start, on_progress=on_progress)


def assert_same(folder: Path, single) -> None:
    emb = load_embeddings(folder)  # verifies the sha256 of both files
    assert emb.ids == single.ids  # the same images, in the same order, each once
    got, want = np.asarray(emb.vectors, np.float32), np.asarray(single.vectors, np.float32)
    assert np.min(np.sum(got * want, axis=1)) >= 0.99999
    np.testing.assert_allclose(got, want, atol=EMBEDDING_ATOL)
    for key in ("count", "dim", "failed_count", "failed", "space", "root"):
        assert emb.manifest[key] == single.manifest[key], key
    assert emb.manifest["model"]["sha256"] == single.manifest["model"]["sha256"]


def test_ray_writes_the_single_process_folder(local_ray, tiny_export, photos, single, tmp_path):
    starts = []
    run_ = on_ray(tiny_export, photos, tmp_path / "ray.emb", on_start=lambda plan, found: starts.append(plan))
    assert_same(tmp_path / "ray.emb", single)
    manifest = run_.manifest
    assert manifest["count"] == 40 and manifest["failed_count"] == 1
    assert manifest["failed"][0]["id"] == "class1/broken.jpg"
    assert manifest["failed"][0]["reason"].startswith(
        f"unreadable image {photos / 'class1' / 'broken.jpg'}: "
    )
    assert manifest["backend"] == single.manifest["backend"] == "ort-cpu"
    assert manifest["ray"] == {"actors": 1, "gpus_per_actor": 0.0}
    (plan,) = starts
    assert plan.cpus == 2 and plan.actors == 1 and not plan.started  # the module's Ray, left running
    assert local_ray.is_initialized()


def test_an_interrupted_ray_run_resumes_and_a_finished_one_is_kept(
    local_ray, tiny_export, photos, single, tmp_path
):
    out = tmp_path / "ray.emb"

    def ctrl_c_after_16(done, total):
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(EmbeddingInterrupted) as stopped:
        on_ray(tiny_export, photos, out, on_progress=ctrl_c_after_16)
    assert 16 <= stopped.value.saved < 40 and (out / "parts").is_dir()
    saved = stopped.value.saved

    resumed = on_ray(tiny_export, photos, out)
    assert resumed.manifest["resumed"] == saved
    assert_same(out, single)

    with pytest.raises(EmbeddingsError, match="already holds finished embeddings"):
        on_ray(tiny_export, photos, out)  # refused before any work, as without --ray
    retried = on_ray(tiny_export, photos, out, retry_failed=True)  # only broken.jpg runs again
    assert retried.manifest["resumed"] == 40 and retried.manifest["failed_count"] == 1
    assert_same(out, single)


def test_a_worker_killed_mid_run_and_the_run_still_exact(
    local_ray, tiny_export, photos, single, tmp_path, monkeypatch
):
    marker = tmp_path / "killed"
    # the actor exits during its 2nd batch, before returning it
    monkeypatch.setenv(hooks.EXIT_AT, "ray-batch:2")
    monkeypatch.setenv(hooks.EXIT_MARKER, str(marker))
    done = on_ray(tiny_export, photos, tmp_path / "ray.emb")
    assert marker.exists()  # the kill happened: Ray restarted the actor and re-ran the lost batch
    assert done.manifest["count"] == 40
    assert_same(tmp_path / "ray.emb", single)


def test_a_lost_image_fails_the_run_after_saving_the_rest(
    local_ray, tiny_export, photos, single, tmp_path, monkeypatch
):
    from invspread_edge_runtime.embeddings import ray_embed

    def drop_pos_5(blocks, pending, plan):
        for block in blocks:
            keep = block["pos"] != 5
            yield from real([{k: v[keep] for k, v in block.items()}], pending, plan)

    real = ray_embed.in_order
    monkeypatch.setattr(ray_embed, "in_order", drop_pos_5)
    out = tmp_path / "ray.emb"
    with pytest.raises(EmbeddingsError, match=r"1 of 41 images never came back.*first: class0/") as lost:
        on_ray(tiny_export, photos, out)
    assert "resumes" in str(lost.value)
    monkeypatch.setattr(ray_embed, "in_order", real)
    assert on_ray(tiny_export, photos, out).manifest["resumed"] == 39  # 40 minus the lost one
    assert load_embeddings(out).ids == single.ids[:5] + single.ids[6:] + single.ids[5:6]


def invedge(capsys, *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = run(create_app(), [str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err.replace("\n", " "), err


def test_the_cli_on_the_module_ray(local_ray, capsys, tiny_export, photos, single, tmp_path):
    out = tmp_path / "cli.emb"
    code, err = invedge(capsys, "embed", tiny_export, photos, "--out", out, "--batch", BATCH, "--ray", "auto")
    assert code == 0, err
    assert "Ray:" in err and "1 embedding actor" in err and "on Ray" in err and "40 embeddings" in err
    assert "1 unreadable image skipped" in err and "--retry-failed --ray auto" in err
    assert_same(out, single)


def test_bad_ray_options_are_one_line_each(capsys, tiny_export, photos, tmp_path):
    out = tmp_path / "x.emb"
    for argv, fragment in [
        (["--ray", "auto", "--ray-actors", "0"], "--ray-actors 0 is out of range. Use 1 to 4096"),
        (["--ray", "auto", "--ray-actors", "100000"], "--ray-actors 100000 is out of range"),
        (["--ray", "auto", "--ray-gpus-per-actor", "-1"], "--ray-gpus-per-actor -1 is out of range"),
        (["--ray", "auto", "--ray-gpus-per-actor", "nan"], "--ray-gpus-per-actor nan is not a number"),
        (["--ray-actors", "2"], "Add --ray auto"),
        (["--ray", "auto", "--backend", "tpu"], "Invalid backend 'tpu'"),
    ]:
        code, err = invedge(capsys, "embed", tiny_export, photos, "--out", out, *argv)
        assert code == 1
        one_line_error(err, fragment)
    assert not out.exists()


def test_without_ray_installed_the_error_names_the_extra(capsys, tiny_export, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, err = invedge(capsys, "embed", tiny_export, photos, "--out", tmp_path / "x.emb", "--ray", "auto")
    assert code == 1
    one_line_error(err, "invedge embed --ray needs the Python package 'ray[data]'",
                   "pip install 'invspread-edge-runtime[ray]'")  # fmt: skip
    assert not (tmp_path / "x.emb").exists()


def invedge_process(tmp_path: Path, *argv: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "INVEDGE_TEST"))}
    return subprocess.run(
        [str(INVEDGE), *map(str, argv)],
        cwd=tmp_path,
        env=env | {"COLUMNS": "200", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_address_is_one_line_naming_it(tmp_path, tiny_export, photos):
    with socket.socket() as s:  # a free port, released: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = invedge_process(
        tmp_path, "embed", tiny_export, photos, "--out", "x.emb", "--ray", f"127.0.0.1:{port}"
    )
    assert done.returncode == 1, done.stderr
    one_line_error(done.stderr, f"cannot reach a Ray cluster at 127.0.0.1:{port}", "ray status")
    assert not (tmp_path / "x.emb").exists()


def test_the_cli_starts_a_local_ray_and_stops_it(tmp_path, tiny_export, photos, single):
    """`--ray auto` in a fresh process without RAY_ADDRESS: a Ray of its own, shut down at the end."""
    done = invedge_process(
        tmp_path, "embed", tiny_export, photos, "--out", "p.emb", "--batch", BATCH, "--ray", "auto", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert "a local Ray" in done.stderr and "Traceback" not in done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["count"] == 40 and manifest["backend"] == "ort-cpu"
    assert_same(tmp_path / "p.emb", single)


RAYLET_MISSED = Exception("The current node timed out during startup. This could happen because ...")
GCS_MISSED = RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port_0a1b")


class _SlowRay:
    """ray.init that misses Ray's start-up wait `misses` times, as Ray says it: the raylet's (a bare
    Exception) or the GCS server's (a RuntimeError about its port file)."""

    def __init__(self, misses: int, error: Exception = RAYLET_MISSED) -> None:
        self.misses, self.error, self.inits, self.shutdowns = misses, error, 0, 0

    def init(self, **options: object) -> None:
        self.inits += 1
        if self.inits <= self.misses:
            raise self.error

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize("error", [RAYLET_MISSED, GCS_MISSED], ids=["raylet", "gcs"])
def test_a_ray_start_that_times_out_once_is_tried_again(error):
    ray = _SlowRay(misses=1, error=error)
    init_ray(ray, num_cpus=2)
    assert (ray.inits, ray.shutdowns) == (2, 1)


def test_a_ray_start_failing_otherwise_is_not_tried_again():
    ray = _SlowRay(misses=1, error=RuntimeError("address already in use"))
    with pytest.raises(RuntimeError, match="address already in use"):
        init_ray(ray, num_cpus=2)
    assert ray.inits == 1


def test_a_ray_start_that_keeps_timing_out_is_a_timeout_error_not_a_bare_exception():
    ray = _SlowRay(misses=5)
    with pytest.raises(TimeoutError, match="Ray did not start in time"):
        init_ray(ray, num_cpus=2)
    assert ray.inits == 2
