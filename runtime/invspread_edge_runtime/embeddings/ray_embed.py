"""`invedge embed --ray`: the embedding loop on a Ray cluster (Ray Data), everything else as without it.

The driver (this process) does what an embed in one process does before and after the loop
(`corpus.claimed_output`, `corpus.write_embeddings`: the checks, the lock, the writer and its parts,
resume, the manifest); only the loop that turns pending images into vectors runs on Ray:

    pending (pos, path) ─ map_batches(decode_images)  CPU tasks: decode + resize (ray_workers.py)
                        ─ map_batches(EmbedActor)     actors: one backend each, a GPU each if any
                        ─ iter_batches on the driver  → back in pending order → EmbeddingWriter

Order is kept (DataContext preserve_order), and the driver also puts rows back by `pos` and takes
each image once, so ids.json is the single-process one. Faults: Ray retries a task whose worker
died and restarts a dead actor, re-running the batch it held. Those are Ray Data's defaults, kept
(ray 2.60: tasks max_retries=-1 in remote_fn.cached_remote_fn; actors max_restarts=-1 and
max_task_retries=-1 in ActorPoolMapOperator._apply_default_remote_args: no limit; other remote
args are deprecated there). An image that never comes back fails the run once the rest is saved,
and the rerun resumes.
The images and the model file must be readable at the same paths on every node (a shared file
system); the driver checks them, the workers read them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import hooks
from ..errors import ConfigError, MissingDependency, UnreachableError
from .corpus import EmbedOptions, EmbedResult, LoopBatch, claimed_output, write_embeddings

INSTALL = "pip install 'invspread-edge-runtime[ray]'"
# Input blocks (one decode task each) of this many batches: a Ray task costs milliseconds to
# schedule, so each should carry far more work than that (measured here, 28-px images on 2 CPUs:
# 4 batches a block ran the steady state at 1,000 img/s, 16 at 3,200), but never fewer blocks
# than two per CPU while there are batches enough to share.
ROWS_PER_BLOCK_BATCHES = 16
# What one decode task holds: a full-size photo being decoded, and its batch of resized pixels.
# Also keeps the decode stage apart: Ray Data fuses a task stage into the actor stage after it when
# their resource requests are equal, and the decoding would then run inside the actors.
DECODE_MEMORY = 256 << 20
PROBE_TIMEOUT_S = 5.0  # a cluster address that does not answer a TCP connect in this time is refused


@dataclass
class RayPlan:
    """Where an `embed --ray` runs, known once Ray is up: what `on_start(plan, images)` is given."""

    address: str  # what was connected to, "local" (a Ray started here), or "connected" (already)
    started: bool  # True: this run started (or connected) Ray and shuts it down at the end
    nodes: int
    cpus: float
    gpus: float
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    backend: str  # what each actor opens ("auto": CUDA/TensorRT where it holds a GPU, else CPU)
    model_path: Path  # the one ONNX file every actor runs
    meta: Any  # its ModelMeta
    backends: set[str] = field(default_factory=set)  # the backends the actors reported

    def describe(self) -> str:
        if self.address == "local":
            where = "a local Ray"
        else:
            where = f"the Ray cluster at {self.address}" if self.started else "this process's Ray connection"
        gpus = f", {self.gpus_per_actor:g} GPU each" if self.gpus_per_actor else ""
        actors = f"{self.actors} embedding actor{'s' * (self.actors != 1)}{gpus}"
        return f"{where} ({self.nodes} node{'s' * (self.nodes != 1)}, {self.cpus:g} CPUs): {actors}"


def embed_images_ray(
    options: EmbedOptions,
    *,
    on_start: Callable[[Any, Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedResult:
    """The embed with its loop on Ray (`options.ray`): the same folder, ids and manifest as in one process.

    `options.ray`: "auto" (the cluster RAY_ADDRESS names, else a Ray started here on all cores and
    GPUs), or any address `ray.init` takes ("HOST:6379", "ray://HOST:10001"). A process already
    connected to Ray (`ray.is_initialized()`) runs on that connection and keeps it. `ray_actors`
    (default: one per GPU, else one per node) and `ray_gpus_per_actor` (default: 1 where the cluster
    has GPUs, else 0) size the actor pool. `on_start(plan, images)` gets the `RayPlan`.
    """
    from ..backends.base import BackendInfo
    from ..backends.select import find_artifacts
    from ..embedder import DEFAULT_BATCH_SIZE

    batch_size = DEFAULT_BATCH_SIZE if options.batch is None else options.batch
    backend = options.backend
    ray = import_ray()
    started = time.perf_counter()
    with claimed_output(options) as found:
        artifacts = find_artifacts(options.model)  # the model is checked before Ray starts
        with ray_session(ray, options.ray) as (where, ours):
            plan = make_plan(ray, where, ours, artifacts, options)
            if on_start is not None:
                on_start(plan, found)
            manifest = write_embeddings(
                ray_loop(ray, plan, batch_size, options.threads),
                plan.meta,
                plan.model_path,
                found.paths,
                found.root,
                options.out,
                backend=lambda: ",".join(sorted(plan.backends)) or backend,
                dtype=options.dtype,
                overwrite=options.overwrite,
                retry_failed=options.retry_failed,
                on_progress=on_progress,
                lock=False,
                extra={"ray": {"actors": plan.actors, "gpus_per_actor": plan.gpus_per_actor}},
            )
    info = BackendInfo(
        name=manifest.get("backend", backend),
        device=plan.describe(),
        precision=plan.meta.precision,
        model_path=str(plan.model_path),
    )
    return EmbedResult(options.out, manifest, info, found, time.perf_counter() - started)


START_TRIES = 2  # ray.init's tries when its raylet or GCS server misses Ray's start-up wait
# Ray's words for that: the raylet's, and the GCS server's (its port file not written in time)
STARTUP_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


def import_ray() -> Any:
    """The `ray` module with Ray Data, or MissingDependency naming the extra."""
    try:
        import ray
        import ray.data  # the [data] extra: pyarrow, pandas
    except ImportError as exc:
        raise MissingDependency("ray[data]", "invedge embed --ray", INSTALL) from exc
    return ray


@contextlib.contextmanager
def ray_session(ray: Any, address: str) -> Iterator[tuple[str, bool]]:
    """Connect to (or start) Ray for one run: yields (where, ours); shuts down only what it began.

    Ray's own output is quieted (its Python logs to ERROR, its C++ logs to FATAL unless
    RAY_BACKEND_LOG_LEVEL says otherwise, no progress bars, no usage stats); the worker logs stay in
    Ray's session folder (/tmp/ray/session_latest/logs).
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no network call home, also from the workers we start
    # Ray's C++ core prints its notes on the driver's stderr (e.g. one "E" line per actor of any Ray Data
    # actor pool with restarts on: ray issue 53727). RAY_BACKEND_LOG_LEVEL=info (or error) shows them.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if ray.is_initialized():
        with quiet_ray_data():
            yield "connected", False
        return
    target = (os.environ.get("RAY_ADDRESS") or None) if address == "auto" else address  # None: start one
    if target not in (None, "auto", "local"):
        probe(target)
    try:
        with stderr_muted():  # the C++ core's line saying it read RAY_BACKEND_LOG_LEVEL
            if target is not None and target.startswith("ray://"):
                ray.init(target, logging_level=logging.ERROR, log_to_driver=False)
            else:
                init_ray(
                    ray,
                    address=target or "local",
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                    include_dashboard=False,
                )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
        raise unreachable(target or "local", first_line(exc)) from exc
    try:
        with quiet_ray_data():
            yield target or "local", True
    finally:
        ray.shutdown()


def init_ray(ray: Any, **options: Any) -> None:
    """`ray.init`, tried once more after a start-up time-out, then a TimeoutError.

    Ray waits a fixed time for the raylet and the GCS server it starts; a machine busy with other
    work can miss that (Ray raises a bare Exception or a RuntimeError), and a second start usually
    makes it."""
    for attempt in range(START_TRIES):
        try:
            ray.init(**options)
            return
        except Exception as exc:
            if not any(words in str(exc) for words in STARTUP_TIMEOUTS):
                raise
            ray.shutdown()
            if attempt == START_TRIES - 1:
                raise TimeoutError(f"Ray did not start in time ({first_line(exc)})") from exc


@contextlib.contextmanager
def stderr_muted() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a moment (C++ code writes there, not to sys.stderr)."""
    if os.environ.get("RAY_BACKEND_LOG_LEVEL") != "fatal":
        yield  # asked for Ray's notes: show them
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def probe(address: str) -> None:
    """Refuse at once an address no Ray answers (ray.init would retry for minutes, printing)."""
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"Invalid --ray {address!r}: not HOST:PORT",
            "Pass --ray auto, HOST:6379 (the head node's GCS port) or ray://HOST:10001 (Ray Client)",
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise unreachable(address, exc.strerror or exc.__class__.__name__) from exc


def unreachable(address: str, why: str) -> UnreachableError:
    return UnreachableError(
        f"cannot reach a Ray cluster at {address} ({why})",
        "Check that the cluster is up ('ray status' on its head node), that this machine reaches that "
        "port (the head's GCS port, default 6379, or ray://HOST:10001 for Ray Client), or use --ray auto",
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__


@contextlib.contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data's console messages (plans, "execution finished", hints) at ERROR, for one run.

    Its log file (ray-data.log in the session folder) keeps everything.
    """
    handlers = [
        h
        for h in logging.getLogger("ray.data").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def make_plan(ray: Any, where: str, ours: bool, artifacts: dict[str, Any], options: EmbedOptions) -> RayPlan:
    """Size the actor pool from the cluster's resources and choose the one model file to run."""
    from ..backends.select import pick_artifact

    backend, actors, gpus_per_actor = options.backend, options.ray_actors, options.ray_gpus_per_actor
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if gpus_per_actor > gpus:
        raise ConfigError(
            f"--ray-gpus-per-actor {gpus_per_actor:g}, but the Ray cluster has {gpus:g} GPUs",
            "Pass --ray-gpus-per-actor 0 for CPU actors, or add GPU nodes to the cluster",
        )
    if actors is None:
        actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor else nodes
    cpus_per_actor = float(options.threads or 1)
    if actors * cpus_per_actor >= cpus:
        raise ConfigError(
            f"{actors} embedding actor{'s' * (actors != 1)} of {cpus_per_actor:g} CPU would take all "
            f"{cpus:g} CPUs of the Ray cluster, leaving none to decode the images",
            "Pass fewer --ray-actors (or --threads), or add nodes",
        )
    # one file for every actor, chosen for where they run: the manifest names the file that made
    # every vector (backends.select's preference: int8-cpu on CPUs, fp16 for CUDA/TensorRT)
    target = backend if backend != "auto" else ("ort-cuda" if gpus_per_actor else "ort-cpu")
    path, meta = pick_artifact(artifacts, target, options.precision)
    return RayPlan(
        address=where,
        started=ours,
        nodes=nodes,
        cpus=cpus,
        gpus=gpus,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        backend=backend,
        model_path=Path(path).resolve(),
        meta=meta,
    )


def ray_loop(ray: Any, plan: RayPlan, batch_size: int, threads: int) -> Callable[..., Iterator[LoopBatch]]:
    """The `corpus.EmbedLoop` on Ray: the pipeline of the module docstring."""
    from . import ray_workers

    def loop(pending: list[tuple[str, Path]]) -> Iterator[LoopBatch]:
        if not pending:
            return
        with warnings.catch_warnings():  # Ray's own: copying a context reads its deprecated fields
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ray.data.DataContext.get_current().copy()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # ours is the driver's (on_progress)
        context.print_on_execution_start = False
        with ray.data.DataContext.current(context):
            items = [{"pos": k, "path": str(path)} for k, (_, path) in enumerate(pending)]
            data = ray.data.from_items(
                items, override_num_blocks=block_count(len(items), batch_size, plan.cpus)
            )
            data = data.map_batches(
                ray_workers.decode_images,
                fn_kwargs={"image_size": plan.meta.image_size},
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=1,
                memory=DECODE_MEMORY + batch_size * 3 * plan.meta.image_size**2,
            )
            env = hooks.environment()
            data = data.map_batches(
                ray_workers.EmbedActor,
                fn_constructor_kwargs={
                    "model_path": str(plan.model_path),
                    "backend": plan.backend,
                    "threads": threads,
                },
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.cpus_per_actor,
                **({"num_gpus": plan.gpus_per_actor} if plan.gpus_per_actor else {}),
                **({"runtime_env": {"env_vars": env}} if env else {}),
            )
            yield from in_order(data.iter_batches(batch_size=None, batch_format="numpy"), pending, plan)

    return loop


def block_count(rows: int, batch_size: int, cpus: float) -> int:
    """How many input blocks for `rows` images (see ROWS_PER_BLOCK_BATCHES)."""
    batches = -(-rows // batch_size)
    return max(1, -(-batches // ROWS_PER_BLOCK_BATCHES), min(batches, int(2 * cpus)))


def in_order(blocks: Any, pending: list[tuple[str, Path]], plan: RayPlan) -> Iterator[LoopBatch]:
    """Rows → `LoopBatch`es in pending order, each `pos` once (a retried batch's repeat is dropped).

    Rows that arrive ahead of a missing one wait for it; rows still waiting at the end (after an
    image that never came back) are given in order all the same: `write_embeddings` saves them
    and names the missing one.
    """
    held: dict[int, tuple[np.ndarray, str]] = {}
    next_pos = 0
    for block in blocks:
        plan.backends.update(str(name) for name in set(block["backend"].tolist()))
        for pos, vector, reason in zip(block["pos"].tolist(), block["vector"], block["reason"], strict=True):
            if pos >= next_pos and pos not in held:
                held[pos] = (vector, str(reason))
        ready = []
        while next_pos in held:
            ready.append(next_pos)
            next_pos += 1
        if ready:
            yield batch_of(ready, held, pending, plan.meta.embedding_dim)
    if held:
        yield batch_of(sorted(held), held, pending, plan.meta.embedding_dim)


def batch_of(
    positions: list[int], held: dict[int, tuple[np.ndarray, str]], pending: list[tuple[str, Path]], dim: int
) -> LoopBatch:
    ids, vectors, failures = [], [], []
    for pos in positions:
        vector, reason = held.pop(pos)
        if reason:
            failures.append((pending[pos][0], reason))
        else:
            ids.append(pending[pos][0])
            vectors.append(vector)
    stacked = np.stack(vectors).astype(np.float32, copy=False) if vectors else np.zeros((0, dim), np.float32)
    return LoopBatch(ids, stacked, failures)
