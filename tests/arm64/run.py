"""`make test-arm64`: the runtime installed and run on arm64 (a Jetson's architecture) under qemu-user.

    .venv/bin/python tests/arm64/run.py [--results runs/arm64/results.json]

On this x86 host (needs root: apt, mount, chroot):
1. scripts/arm64_root.sh makes (once, cached in .cache/arm64-root) an arm64 Debian root, with Debian's
   qemu-user-static registered with binfmt_misc (fix-binary flag);
2. a tiny export (torch, here), 40 Fashion-MNIST images and their x86 embeddings (ONNX Runtime, FP32);
3. inside the root: a fresh venv, `pip install './runtime[cpu,search,serve]'` (aarch64 wheels, timed),
   then tests/arm64/smoke.py: embed, index build, search, verify, serve (asked over HTTP on loopback);
4. here again: the aarch64 embeddings against the x86 ones (cosine, max |diff|), the same neighbours.

/proc/cpuinfo inside the root is tests/arm64/cpuinfo-orin (a Jetson Orin's Cortex-A78AE): onnxruntime
reads it to pick kernels and crashes (SIGSEGV) under qemu on the host's x86 one. Every step is bounded;
mounts are undone on exit. Results: a JSON file and a table. Exit 0 only when every step passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # tests/: tiny.py

from tiny import tiny_config  # noqa: E402

ROOT = REPO / ".cache" / "arm64-root"
WORK = REPO / ".cache" / "arm64-work"  # bound into the root at /invedge
INSIDE = "/invedge"
VENV = "/opt/invedge-venv"
EXTRAS = "cpu,search,serve"
# An image folder the runtime embeds: 40 test images (10 from each of 4 classes), half PNG, half JPEG.
IMAGES_PER_CLASS, CLASSES, QUERIES = 10, 4, 4
# Bounds, in seconds (qemu runs arm64 code 5-20x slower than native).
ROOT_TIMEOUT, VENV_TIMEOUT, PIP_TIMEOUT, SMOKE_TIMEOUT = 2400, 600, 2400, 3000
MIN_COSINE = (
    0.99999  # aarch64 vs x86 FP32 embeddings of the same images (float32 kernels may sum in another order)
)


class StepFailed(Exception):
    """A step that leaves nothing for the next ones (no root, no install): the run stops there."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "runs" / "arm64" / "results.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "error: make test-arm64 needs root (apt, binfmt_misc, mount, chroot). Run it as root",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the mounts' `finally` runs on SIGTERM too
    started = time.monotonic()
    results: dict[str, Any] = dict(steps=[])
    try:
        run_all(results)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["ok"] = (
        bool(results["steps"]) and all(step["ok"] for step in results["steps"]) and "compare" in results
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    print_table(results, args.results)
    return 0 if results["ok"] else 1


def run_all(results: dict[str, Any]) -> None:
    steps = results["steps"]
    root = timed(steps, "arm64 root", make_root)
    timed(steps, "prepare (x86)", prepare)
    with mounted(root):
        timed(steps, "venv", lambda: chroot(root, ["/usr/bin/python3", "-m", "venv", VENV], VENV_TIMEOUT))
        pip = [f"{VENV}/bin/pip", "install", "-q", f"{INSIDE}/runtime[{EXTRAS}]"]
        timed(steps, "pip install", lambda: chroot(root, pip, PIP_TIMEOUT))
        results["install_seconds"] = steps[-1]["seconds"]
        listed = chroot(root, [f"{VENV}/bin/pip", "list", "--format", "json"], VENV_TIMEOUT)
        results["installed"] = {p["name"]: p["version"] for p in json.loads(listed)}
        smoke = [f"{VENV}/bin/python", f"{INSIDE}/smoke.py", INSIDE]
        smoke_run = chroot(root, smoke, SMOKE_TIMEOUT, check=False)
    inside = json.loads((WORK / "arm64.json").read_text()) if (WORK / "arm64.json").exists() else None
    if inside is None:
        raise StepFailed(f"the smoke run inside the root wrote no results:\n{smoke_run}")
    results["environment"] = inside["environment"]
    steps.extend(dict(step, name=f"arm64: {step['name']}") for step in inside["steps"])
    results["compare"] = compare(inside, steps)


def timed(steps: list[dict[str, Any]], name: str, action: Any) -> Any:
    """Run `action`, record the step (ok, seconds); a failure stops the run (StepFailed)."""
    start = time.monotonic()
    try:
        value = action()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        steps.append(
            dict(name=name, ok=False, seconds=round(time.monotonic() - start, 1), detail=describe(exc))
        )
        raise StepFailed(f"{name}: {describe(exc)}") from None
    steps.append(dict(name=name, ok=True, seconds=round(time.monotonic() - start, 1), detail=""))
    return value


def describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no end within {exc.timeout:.0f} s"
    if isinstance(exc, subprocess.CalledProcessError):
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        return f"exit {exc.returncode}: {' / '.join(tail)}"
    return str(exc)


def run(argv: list[str], timeout: float, check: bool = True) -> str:
    """A command in its own process group: on timeout the whole group is killed, grandchildren too."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return out if check else out + err


def make_root() -> Path:
    """scripts/arm64_root.sh: its one-line error is this run's error."""
    try:
        run(["bash", str(REPO / "scripts" / "arm64_root.sh"), str(ROOT)], ROOT_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise StepFailed((exc.stderr or "").strip().splitlines()[-1].removeprefix("error: ")) from None
    return ROOT


# --- on the host: the export, the images, the x86 embeddings -------------------------------------------


def prepare() -> None:
    """A fresh WORK: the runtime's source, a tiny export (FP32, FP16, INT8), images, x86 embeddings."""
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    shutil.copytree(
        REPO / "runtime",
        WORK / "runtime",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    shutil.copy2(HERE / "smoke.py", WORK / "smoke.py")
    tiny_export(WORK / "export")
    write_images(WORK)
    invedge = str(REPO / ".venv" / "bin" / "invedge")
    run([invedge, "embed", str(WORK / "export"), str(WORK / "images"), "--out", str(WORK / "x86.emb"),
         "--backend", "ort-cpu", "--precision", "fp32"], 600)  # fmt: skip
    run([invedge, "index", "build", str(WORK / "x86.emb"), "--out", str(WORK / "x86.index")], 600)
    found = run([invedge, "search", str(WORK / "x86.index"), str(WORK / "queries"), "--k", "5",
                 "--backend", "ort-cpu", "--json"], 600)  # fmt: skip
    (WORK / "x86-search.json").write_text(found)


def tiny_export(out: Path) -> None:
    """The tests' tiny encoder (width 8, random weights), exported as `invedge export --int8 --fp16` does."""
    import torch

    from invspread_edge.checkpoint import build_model, load_checkpoint, save_checkpoint
    from invspread_edge.model import create_model
    from invspread_edge_export.meta import meta_from_config
    from invspread_edge_export.pipeline import ExportOptions, export_model

    torch.manual_seed(0)
    cfg = tiny_config()
    run_dir = out.parent / "run"
    run_dir.mkdir()
    model = create_model(cfg["arch"], width=cfg["width"], embedding_dim=cfg["embedding_dim"])
    save_checkpoint(run_dir / "checkpoint.safetensors", model, cfg, epoch=0, step=0)
    ckpt = load_checkpoint(run_dir)
    options = ExportOptions(out_dir=out, int8=True, fp16=True, calib_count=64, accuracy_queries=100,
                            accuracy_memory=200, allow_accuracy_drop=100.0)  # fmt: skip
    export_model(build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256), options, data="fashion-mnist")


def write_images(work: Path) -> None:
    """Fashion-MNIST test images as PNG and JPEG files in class folders; the queries are other images."""
    from PIL import Image

    from invspread_edge_runtime.evaluation.datasets import open_dataset

    data = open_dataset("fashion-mnist", "test")
    (work / "queries").mkdir()
    for cls in range(CLASSES):
        idx = np.flatnonzero(data.labels == cls)
        (work / "images" / f"class{cls}").mkdir(parents=True)
        for n, i in enumerate(idx[:IMAGES_PER_CLASS]):
            suffix = ".png" if n % 2 else ".jpg"
            Image.fromarray(data.images[i, 0]).save(work / "images" / f"class{cls}" / f"img{i:05d}{suffix}")
        i = idx[IMAGES_PER_CLASS]
        Image.fromarray(data.images[i, 0]).save(work / "queries" / f"query{cls}-{i:05d}.png")


# --- the arm64 root: mounts and commands ---------------------------------------------------------------


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc (with an ARM cpuinfo over it), /sys, /dev and the work folder; undone on exit."""
    unmount_all(root)  # left by a run that was killed
    (root / INSIDE.lstrip("/")).mkdir(exist_ok=True)
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")  # pip reaches the index from inside
    host_ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():
        shutil.copy2(host_ca, WORK / "ca-certificates.crt")
    venv = root / VENV.lstrip("/")
    if venv.exists():
        shutil.rmtree(venv)  # every run installs into a fresh venv (the install is what is timed)
    mounts = [
        (["-t", "proc", "proc"], "proc"),
        (["--bind", str(HERE / "cpuinfo-orin")], "proc/cpuinfo"),
        (["--bind", "/sys"], "sys"),
        (["--rbind", "/dev"], "dev"),
        (["--bind", str(WORK)], INSIDE.lstrip("/")),
    ]
    try:
        for options, target in mounts:
            run(["mount", *options, str(root / target)], 60)
        run(["mount", "--make-rslave", str(root / "dev")], 60)
        yield
    finally:
        unmount_all(root)


def unmount_all(root: Path) -> None:
    """Every mount under the root, deepest first (lazily when busy)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as table:
        targets = [line.split()[1].replace("\\040", " ") for line in table]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)


def chroot(root: Path, argv: list[str], timeout: float, check: bool = True) -> str:
    """`argv` inside the root, with a clean environment (the host's pip settings name x86 wheel folders)."""
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8",
           "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_DEFAULT_TIMEOUT=180", "OMP_NUM_THREADS=1"]  # fmt: skip
    if (WORK / "ca-certificates.crt").exists():
        env.append(f"PIP_CERT={INSIDE}/ca-certificates.crt")
    return run(["chroot", str(root), *env, *argv], timeout, check=check)


# --- back on the host: aarch64 against x86 ----------------------------------------------------------------


def compare(inside: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The same export and images: aarch64's embeddings against x86's, and the neighbours each search found."""
    from invspread_edge_runtime.embeddings.reader import load_embeddings

    figures: dict[str, Any] = {}
    start = time.monotonic()
    try:
        x86, arm = load_embeddings(WORK / "x86.emb"), load_embeddings(WORK / "arm64.emb")
        order = {item: n for n, item in enumerate(arm.ids)}
        a = np.asarray(x86.vectors, dtype=np.float64)
        b = np.asarray(arm.vectors, dtype=np.float64)[[order[item] for item in x86.ids]]
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        figures.update(
            items=len(x86.ids), cosine_min=float(cosine.min()), max_abs_diff=float(np.abs(a - b).max())
        )
        figures["same_space"] = x86.space_id == arm.space_id
        figures["verify"] = {r["precision"]: r["status"] for r in (inside["verify"] or {}).get("results", [])}
        figures["same_neighbours"] = neighbours(
            json.loads((WORK / "x86-search.json").read_text())
        ) == neighbours(inside["search"])
        served = inside["serve"].get("embed", {}).get("items", [{}])[0].get("embedding")
        if served is not None:
            query = np.asarray(served, dtype=np.float64)
            ref = x86_query_vector()
            figures["serve_vs_x86_cosine"] = float(
                query @ ref / (np.linalg.norm(query) * np.linalg.norm(ref))
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
    ok = (
        "error" not in figures
        and figures["cosine_min"] >= MIN_COSINE
        and figures["same_space"]
        and figures["same_neighbours"]
        and bool(figures["verify"])
        and set(figures["verify"].values()) == {"pass"}
        and figures.get("serve_vs_x86_cosine", 0.0) >= MIN_COSINE
    )
    detail = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    steps.append(
        dict(name="compare x86 vs arm64", ok=ok, seconds=round(time.monotonic() - start, 1), detail=detail)
    )
    return figures


def neighbours(found: Any) -> list[list[str]]:
    """The neighbour ids per query, from `invedge search --json` (the scores differ in the last bits)."""
    return [[n["id"] for n in query["neighbours"]] for query in found["results"]]


def x86_query_vector() -> np.ndarray:
    """The first query image (the one smoke.py sends to /v1/embed), embedded here by the runtime on x86."""
    from invspread_edge_runtime.embedder import Embedder

    first = sorted((WORK / "queries").iterdir())[0]
    embedder = Embedder(WORK / "export", backend="ort-cpu", precision="fp32")
    try:
        return np.asarray(embedder.embed([first])[0], dtype=np.float64)
    finally:
        embedder.close()


def print_table(results: dict[str, Any], path: Path) -> None:
    print(f"{'step':<28} {'ok':<5} {'seconds':>8}  detail")
    for step in results["steps"]:
        print(
            f"{step['name']:<28} {'yes' if step['ok'] else 'NO':<5} {step['seconds']:>8}  {step['detail'][:90]}"
        )
    env = results.get("environment", {})
    if env:
        print(f"inside: {env.get('machine')}, Python {env.get('python')}, onnxruntime {env.get('onnxruntime')}, "
              f"numpy {env.get('numpy')}, faiss {env.get('faiss')}")  # fmt: skip
    if "install_seconds" in results:
        print(
            f"pip install './runtime[{EXTRAS}]': {results['install_seconds']} s (from the index, into a fresh venv)"
        )
    figures = results.get("compare", {})
    if "cosine_min" in figures:
        print(f"aarch64 vs x86, FP32, {figures['items']} images: cosine min {figures['cosine_min']:.15f}, "
              f"max |diff| {figures['max_abs_diff']:.3g}, same neighbours {figures['same_neighbours']}, "
              f"served /v1/embed vs x86 cosine {figures.get('serve_vs_x86_cosine', float('nan')):.15f}; "
              f"verify {figures['verify']}")  # fmt: skip
    print(f"total {results['total_seconds']} s; {'PASSED' if results['ok'] else 'FAILED'}; results: {path}")


if __name__ == "__main__":
    sys.exit(main())
