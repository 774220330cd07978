"""The runtime's smoke checks, run INSIDE the arm64 root by tests/arm64/run.py (stdlib + the runtime).

    python smoke.py WORK       (WORK holds export/, images/, queries/; results go to WORK/arm64.json)

Each CLI verb runs as a user runs it (the `invedge` console script of this venv), bounded by a
timeout; `invedge serve` is started on loopback and asked over HTTP. The host compares the
embeddings written here with its own (x86) ones.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

INVEDGE = str(Path(sys.executable).with_name("invedge"))
STEP_TIMEOUT = 900  # seconds: one verb under qemu (embed of 40 images takes well under a minute)
SERVE_START_TIMEOUT = 600


def run_step(name: str, argv: list[str], results: list[dict[str, Any]], json_out: bool = False) -> Any:
    """Run one verb; record ok/seconds/output tail; return its parsed JSON stdout when asked."""
    start = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        ok, out, err = done.returncode == 0, done.stdout, done.stderr
        detail = f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        ok, out, err, detail = False, "", "", f"no answer within {STEP_TIMEOUT} s"
    parsed = None
    if ok and json_out:
        try:
            parsed = json.loads(out)
        except ValueError:
            ok, detail = False, "stdout is not JSON"
    results.append(
        dict(
            name=name,
            ok=ok,
            seconds=round(time.monotonic() - start, 1),
            detail=detail,
            tail=(out + err)[-1500:],
        )
    )
    return parsed


def multipart(path: Path) -> tuple[bytes, str]:
    """One `image` field holding the file, as /v1/embed and /v1/search take it."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def ask(url: str, body: bytes | None = None, content_type: str = "") -> Any:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def serve_check(work: Path, image: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Start `invedge serve` on a free loopback port, ask healthz/readyz/embed/search, stop it with SIGTERM."""
    start = time.monotonic()
    argv = [INVEDGE, "serve", str(work / "export"), "--index", str(work / "arm64.index"), "--port", "0",
            "--backend", "ort-cpu", "--precision", "fp32"]  # fmt: skip
    log = (work / "serve.log").open("w+")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    got: dict[str, Any] = {}
    ok, detail = False, ""
    try:
        url = wait_for_serving_line(work / "serve.log", proc)
        got["healthz"] = ask(f"{url}/healthz")
        got["readyz"] = ask(f"{url}/readyz")
        got["embed"] = ask(f"{url}/v1/embed", *multipart(image))
        got["search"] = ask(f"{url}/v1/search?k=5", *multipart(image))
        ok = got["healthz"].get("status") == "ok" and bool(got["search"]["results"][0]["neighbours"])
        detail = f"{url}: readyz {got['readyz'].get('status')}, gallery {got['readyz'].get('gallery')}"
    except Exception as exc:  # any failure is this step's result, reported, never a crash of the smoke run
        detail = f"{type(exc).__name__}: {exc}"
    finally:
        stop(proc)
        log.seek(0)
        tail = log.read()[-1500:]
        log.close()
    results.append(
        dict(name="serve", ok=ok, seconds=round(time.monotonic() - start, 1), detail=detail, tail=tail)
    )
    return got


def wait_for_serving_line(log: Path, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + SERVE_START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"serving (http://\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"invedge serve exited ({proc.returncode}) before serving")
        time.sleep(0.5)
    raise TimeoutError(f"no serving line within {SERVE_START_TIMEOUT} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server drains), then SIGKILL to its process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def environment() -> dict[str, Any]:
    """What the install picked: the machine, and the versions of the wheels that carry native code."""
    import faiss
    import numpy
    import onnxruntime
    import PIL

    found: dict[str, Any] = dict(machine=platform.machine(), python=platform.python_version())
    found.update(numpy=numpy.__version__, onnxruntime=onnxruntime.__version__, pillow=PIL.__version__)
    found.update(faiss=faiss.__version__, ort_providers=onnxruntime.get_available_providers())
    for name in ("httptools", "uvloop"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def main(work: Path) -> int:
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = dict(environment=environment(), steps=results)
    export, images, queries = work / "export", work / "images", work / "queries"
    run_step("version", [INVEDGE, "--version"], results)
    run_step("embed", [INVEDGE, "embed", str(export), str(images), "--out", str(work / "arm64.emb"),
                       "--backend", "ort-cpu", "--precision", "fp32", "--overwrite"], results)  # fmt: skip
    run_step("index build", [INVEDGE, "index", "build", str(work / "arm64.emb"), "--out", str(work / "arm64.index"),
                             "--overwrite", "--json"], results, json_out=True)  # fmt: skip
    report["search"] = run_step("search", [INVEDGE, "search", str(work / "arm64.index"), str(queries), "--k", "5",
                                           "--backend", "ort-cpu", "--json"], results, json_out=True)  # fmt: skip
    report["verify"] = run_step("verify", [INVEDGE, "verify", str(export), "--backend", "ort-cpu", "--json"],
                                results, json_out=True)  # fmt: skip
    report["serve"] = serve_check(work, sorted(queries.iterdir())[0], results)
    (work / "arm64.json").write_text(json.dumps(report, indent=2))
    return 0 if all(step["ok"] for step in results) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
