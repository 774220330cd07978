"""Write an export folder into a Triton model repository: an ensemble clients send raw images to.

The models (one folder each, version `1/`), for a base name `invedge_<slug>`:
- `invedge_<slug>`: the ensemble (IMAGE bytes → EMBEDDING), the model clients call;
- `invedge_<slug>_preprocess`: Python backend, the toolkit's decoder and normalisation;
- `invedge_<slug>_onnx`: the embedding model, `onnxruntime_onnx` (or, `embedding="python"`, a
  Python-backend model running ONNX Runtime on the same file);
- `invedge_<slug>_trt`: a `tensorrt_plan` built here with `tensorrt.build.build_engine` (only when an
  engine is asked for; plans are never copied between GPUs); the ensemble then uses it.

Writers of one repository take its lock (`locks.exclusive_lock(REPO)`), so two never mix models.
Everything is written into a hidden staging folder BESIDE the repository (`.REPO.invedge-staging-*`,
same file system; Triton loads every folder inside REPO, hidden ones too, so nothing of ours is ever
there half-made), then each model folder is swapped into place with `files.replace_folder` (the old
one, with `overwrite`, moved into the staging folder and removed after), the ensemble LAST so it never
points at a model that is not there yet. A failure before the swap (a bad artifact, an engine build
that fails its check) leaves the repository as it was. Before the swap the staging folder records
what it will swap (`SWAP`); a writer killed during the swap leaves the old or the new folder of each
model whole, and the next write (under the lock) finishes that swap first and removes what killed
writers left. With `overwrite` and no engine, our stale `_trt` plan model goes (after the ensemble
stops using it). Other models' folders are never touched; the README lists every invedge ensemble.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import bounds
from ...errors import ConfigError, WriteError
from ...files import (
    atomic_write_json,
    atomic_write_text,
    os_error,
    probe_write,
    read_json,
    recover_swap,
    remove_aside,
    replace_folder,
    unremovable,
)
from ...locks import exclusive_lock
from ...metadata import FORMAT, PREFIX, ModelMeta
from ...tensorrt.cache import DEFAULT_MAX_BATCH, DEFAULT_MIN_BATCH, DEFAULT_WORKSPACE_MB
from . import config
from .readme import MARK, find_ensembles, readme_text

EMBEDDINGS = ("onnxruntime", "python")
DEVICES = ("gpu", "cpu")
DEFAULT_QUEUE_DELAY_US = 100
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PYTHON_MODELS = Path(__file__).with_name("python_models")
STAGING = ".invedge-staging-"  # `.REPO.invedge-staging-XXXX` beside REPO
SWAP = "swap.json"  # in a staging folder, written once every model is staged: what the swap moves
README = "README.md"
README_BESIDE = "README.invedge.md"  # where a README.md not ours is there already


@dataclass(frozen=True)
class ModelNames:
    """The names of our models for one base name (module docstring)."""

    ensemble: str

    @property
    def preprocess(self) -> str:
        return f"{self.ensemble}_preprocess"

    @property
    def onnx(self) -> str:
        return f"{self.ensemble}_onnx"

    @property
    def trt(self) -> str:
        return f"{self.ensemble}_trt"


@dataclass(frozen=True)
class TritonOptions:
    """What `write_repository` writes; `check()` refuses a bad value in one line before any work.

    `engine`: an object with min_batch, opt_batch, max_batch, workspace_mb and (optionally)
    dla_core (`TritonEngine`, or the export's EngineOptions): build a TensorRT plan here.
    `preferred_batch`: the dynamic batcher's preferred sizes (None: 8 and `max_batch`).
    `threads`: ONNX Runtime's threads in the Python embedding model (0: its default).
    """

    name: str | None = None
    embedding: str = "onnxruntime"
    device: str = "gpu"
    precision: str | None = None
    trt_accelerator: bool = False
    max_batch: int = DEFAULT_MAX_BATCH
    preferred_batch: tuple[int, ...] | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    threads: int = 0
    engine: Any = None
    overwrite: bool = False

    def check(self) -> None:
        if self.name is not None and not NAME.match(self.name):
            raise ConfigError(
                f"--name {self.name!r} is not a model name", "Use 1 to 64 letters, digits, '_' or '-'"
            )
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(
                f"Invalid --embedding {self.embedding!r}. Only {', '.join(EMBEDDINGS)} are supported."
            )
        if self.device not in DEVICES:
            raise ConfigError(f"Invalid --device {self.device!r}. Only {', '.join(DEVICES)} are supported.")
        bounds.TRITON_MAX_BATCH.check(self.max_batch)
        bounds.TRITON_QUEUE_DELAY_US.check(self.queue_delay_us)
        bounds.TRITON_INSTANCES.check(self.instances)
        bounds.TRITON_THREADS.check(self.threads)
        for size in self.preferred_batch or ():
            bounds.TRITON_PREFERRED_BATCH.check(size)
            if size > self.max_batch:
                raise ConfigError(
                    f"--preferred-batch {size} is above --max-batch {self.max_batch}",
                    "Use preferred sizes up to the maximum batch",
                )
        self._check_combination()
        if self.engine is not None:
            from ...tensorrt import api

            trt = api.import_tensorrt()  # MissingDependency / EngineError: before the export is read
            settings = engine_settings(self.engine)
            if settings["dla_core"] is not None:  # a GPU without that DLA core: one line, before any work
                api.check_dla_core(trt, settings["dla_core"], settings["max_batch"])

    def _check_combination(self) -> None:
        gpu_only = [
            flag
            for flag, on in (("--trt-accelerator", self.trt_accelerator), ("--engine", self.engine))
            if on
        ]
        if gpu_only and self.device == "cpu":
            raise ConfigError(f"{gpu_only[0]} runs on the GPU, not with --device cpu", "Use --device gpu")
        if gpu_only and self.embedding == "python":
            raise ConfigError(
                f"{gpu_only[0]} is for Triton's own backends; --embedding python runs ONNX Runtime on the CPU",
                "Leave out --embedding python",
            )
        if self.engine is not None:
            _check_plan_batch(engine_settings(self.engine), self.max_batch)

    @property
    def batching(self) -> config.Batching:
        preferred = self.preferred_batch or tuple(sorted({min(8, self.max_batch), self.max_batch}))
        return config.Batching(
            self.max_batch, tuple(sorted(set(preferred))), self.queue_delay_us, self.instances
        )

    @property
    def backend(self) -> str:
        """The runtime backend whose artifact preference picks the ONNX file (`select.PREFERENCE`)."""
        if self.engine is not None:
            return "trt"
        if self.device == "cpu" or self.embedding == "python":
            return "ort-cpu"
        return "ort-trt" if self.trt_accelerator else "ort-cuda"


@dataclass(frozen=True)
class TritonEngine:
    """The TensorRT plan's batch profile, workspace and DLA core (the CLI's engine options)."""

    min_batch: int = DEFAULT_MIN_BATCH
    opt_batch: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    dla_core: int | None = None


def _check_plan_batch(settings: dict[str, Any], max_batch: int) -> None:
    """Triton's dynamic batcher sends the plan every batch size from 1 to `max_batch`: the plan's
    profile must take them all (a DLA plan has one fixed batch, its maximum)."""
    if settings["max_batch"] < max_batch:
        raise ConfigError(
            f"--max-batch {max_batch} is above the engine's maximum batch {settings['max_batch']}",
            "Build the engine for a larger batch, or lower --max-batch",
        )
    if settings["dla_core"] is not None and settings["max_batch"] != 1:
        raise ConfigError(
            f"--dla builds a plan of one fixed batch ({settings['max_batch']}); Triton's dynamic batcher "
            "sends it smaller batches",
            "Leave out --dla, or pass --max-batch 1 for a DLA plan of batch 1",
        )
    if settings["min_batch"] != 1:
        raise ConfigError(
            f"--min-batch {settings['min_batch']}: Triton's dynamic batcher sends the plan batches from 1 up",
            "Leave out --min-batch (1)",
        )


def engine_settings(engine: Any) -> dict[str, Any]:
    """An EngineOptions-like object's build settings (a missing dla_core: the GPU)."""
    return {
        "min_batch": engine.min_batch,
        "opt_batch": engine.opt_batch,
        "max_batch": engine.max_batch,
        "workspace_mb": engine.workspace_mb,
        "dla_core": getattr(engine, "dla_core", None),
    }


@dataclass(frozen=True)
class TritonRepository:
    """What `write_repository` wrote."""

    repo: Path
    ensemble: str
    preprocess_model: str
    embedding_model: str
    models: tuple[str, ...]
    artifact: Path
    precision: str
    readme: Path
    engine: dict[str, Any] | None = field(default=None)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self.repo / name for name in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "ensemble": self.ensemble,
            "preprocess_model": self.preprocess_model,
            "embedding_model": self.embedding_model,
            "models": list(self.models),
            "paths": [str(p) for p in self.paths],
            "artifact": str(self.artifact),
            "precision": self.precision,
            "readme": str(self.readme),
            "engine": self.engine,
        }


def base_name(export_dir: str | os.PathLike[str], name: str | None = None) -> str:
    """`invedge_<slug>`: slug = `name`, else the run folder's name (`runs/shop/export` → `shop`; an
    export folder not named `export` → its own name), lower-cased, [a-z0-9_] only."""
    if name is None:
        folder = Path(export_dir).absolute()
        if folder.is_file():
            folder = folder.parent
        name = folder.parent.name if folder.name == "export" else folder.name
        name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "model"
    return f"invedge_{name}"


def our_models(names: ModelNames, engine: bool) -> tuple[str, ...]:
    return (names.ensemble, names.preprocess, names.onnx, *((names.trt,) if engine else ()))


def stale_models(names: ModelNames, options: TritonOptions) -> tuple[str, ...]:
    """Ours that this write removes: the old plan model, replaced without an engine."""
    return (names.trt,) if options.overwrite and options.engine is None else ()


def check_target(
    repo_dir: str | os.PathLike[str],
    models: tuple[str, ...],
    overwrite: bool,
    exists_hint: str | None = None,
    stale: tuple[str, ...] = (),
) -> Path:
    """The repository folder, checked and NOT created (a failed export leaves nothing): ConfigError
    for a path that is not a folder, a folder of one of `models` there already (without `overwrite`;
    `exists_hint` says what to do, default: --overwrite or --name), one that is not ours (`is_ours`:
    refused even with `overwrite`, which replaces only what invedge wrote), one `overwrite` could not
    remove, or a repository whose models cannot be staged beside it. Called before any work."""
    repo = Path(repo_dir)
    if repo.exists() and not repo.is_dir():
        raise ConfigError(f"{repo} is not a folder", "Pass a folder for the Triton model repository")
    for model in (*models, *stale):
        path = repo / model
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ConfigError(f"{path} is not a model folder", "Move it away, or choose another --name")
        if path.exists() and not overwrite:
            raise ConfigError(
                f"{path} exists: the repository has a model of that name already",
                exists_hint or "Pass --overwrite to replace it, or --name to add this one beside it",
            )
        if path.exists() and not is_ours(path):
            raise ConfigError(
                f"{path} is not a model invedge wrote (its config.pbtxt has no {PREFIX}format parameter): "
                "--overwrite replaces only ours",
                "Move it away, or choose another --name",
            )
        if path.exists() and (blocked := unremovable(path)) is not None:
            raise ConfigError(
                f"cannot replace {path}: {blocked} is not writable, so the old model could not be removed",
                f"Make it writable (chmod -R u+w {path}), or choose another --name",
            )
    _check_staging(repo)
    return repo


def is_ours(folder: Path) -> bool:
    """Whether `folder` is a model invedge wrote: its config.pbtxt carries our metadata's format."""
    try:
        text = (folder / "config.pbtxt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return config.read_parameters(text).get(PREFIX + "format") == FORMAT


def _check_staging(repo: Path) -> None:
    """The models are staged beside `repo` (module docstring): its parent must be writable and on
    the same file system (a mount point's parent is not)."""
    folder, parent = _absolute(repo), _absolute(repo).parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        probe_write(existing)  # the repository, or the folder it will be made in
    except OSError as exc:
        raise os_error(exc, repo, atomic=False) from exc
    if existing != folder:
        return
    try:
        probe_write(parent)
    except OSError as exc:
        raise ConfigError(
            f"cannot stage models beside {repo}: {parent} is not writable ({exc.strerror or exc})",
            "Triton loads every folder inside a repository, so invedge writes its models beside it "
            "first: make that folder writable, or write the repository elsewhere and copy it",
        ) from exc
    if not same_file_system(folder, parent):
        raise ConfigError(
            f"{repo} is on another file system than its parent folder (a mount point, or a link to one): "
            "models staged beside it cannot be renamed into it",
            "Write the repository into a folder inside it (--out REPO/models), or write it elsewhere and copy it",
        )


def same_file_system(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _absolute(repo: Path) -> Path:
    return Path(os.path.abspath(repo))  # `..` resolved: the staging folder is named after the repository


def staging_prefix(repo: Path) -> str:
    return f".{_absolute(repo).name}{STAGING}"


def check_repository_target(
    export_dir: str | os.PathLike[str],
    repo_dir: str | os.PathLike[str],
    options: TritonOptions | None = None,
    *,
    exists_hint: str | None = None,
) -> Path:
    """Everything `write_repository` checks before reading the export (the options, the target
    folder and our model names in it): `invedge export --triton` calls it before minutes of export,
    with its own `exists_hint` (the line's next step when one of our models is there already)."""
    options = options or TritonOptions()
    options.check()
    names = ModelNames(base_name(export_dir, options.name))
    models = our_models(names, options.engine is not None)
    return check_target(repo_dir, models, options.overwrite, exists_hint, stale_models(names, options))


def write_repository(
    export_dir: str | os.PathLike[str],
    repo_dir: str | os.PathLike[str],
    options: TritonOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
    exists_hint: str | None = None,
    **fields: Any,
) -> TritonRepository:
    """Write the export in `export_dir` into the Triton model repository `repo_dir` (module
    docstring). Options: a `TritonOptions`, or its fields as keywords (`embedding="python"`, ...).
    Raises ConfigError for a bad option or target, ModelError for an export without the artifact
    asked for, EngineError/AccuracyError from an engine build; the repository is then unchanged."""
    from ...backends.select import find_artifacts, pick_artifact

    options = options or TritonOptions(**fields)
    repo = check_repository_target(export_dir, repo_dir, options, exists_hint=exists_hint)
    say = log or (lambda _line: None)
    names = ModelNames(base_name(export_dir, options.name))
    models, stale = our_models(names, options.engine is not None), stale_models(names, options)
    artifact, meta = pick_artifact(find_artifacts(export_dir), options.backend, options.precision)
    with exclusive_lock(_absolute(repo), "Triton model repository"):
        for line in clear_leftovers(repo):
            say(line)
        check_target(repo, models, options.overwrite, exists_hint, stale)  # another writer's models?
        say(f"Triton repository {repo}: {names.ensemble} from {artifact.name} ({meta.precision})")
        try:
            repo.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(repo), dir=_absolute(repo).parent))
        except OSError as exc:
            raise os_error(exc, repo, atomic=False) from exc
        try:
            engine = _write_models(staging, names, options, artifact, meta, say)
            embedding = names.trt if engine else names.onnx
            _write_model(staging / names.ensemble, config.ensemble_config(
                names.ensemble, meta, options.max_batch, names.preprocess, embedding))  # fmt: skip
            swap = [*(m for m in models if m != names.ensemble), names.ensemble]  # the ensemble last
            atomic_write_json(
                staging / SWAP, {"swap": swap, "remove": [m for m in stale if (repo / m).exists()]}
            )
            _swap(repo, staging)
            readme = write_readme(repo)
        except OSError as exc:
            raise os_error(exc, repo, atomic=False) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return TritonRepository(
        repo=repo,
        ensemble=names.ensemble,
        preprocess_model=names.preprocess,
        embedding_model=embedding,
        models=models,
        artifact=artifact,
        precision=meta.precision,
        readme=readme,
        engine=engine,
    )


def clear_leftovers(repo: Path) -> list[str]:
    """Finish the swap of a writer killed during it, and remove the staging folders killed writers
    left (call under the repository's lock); what was done, one line each."""
    done = []
    staged = sorted(_absolute(repo).parent.glob(glob.escape(staging_prefix(repo)) + "*"))
    inside = sorted(repo.glob(f"{STAGING}*")) if repo.is_dir() else []  # where older versions staged
    for staging in (*staged, *inside):
        if staging.is_symlink() or not staging.is_dir():
            continue
        if (staging / SWAP).is_file():
            _swap(repo, staging)
            done.append(f"finished an interrupted write into {repo} (from {staging.name})")
        shutil.rmtree(staging, ignore_errors=True)
    return done


def _swap(repo: Path, staging: Path) -> None:
    """Swap the staged models into `repo` in `SWAP`'s order, then remove its stale models; run again
    on the same staging folder (after a kill), it finishes what is left (`files.recover_swap`)."""
    plan = read_json(staging / SWAP, "staging record")
    for model in plan["swap"]:
        target, aside = repo / model, staging / f"{model}.old"
        recover_swap(target, aside, staging / model)  # a swap of this model cut short
        if (staging / model).is_dir():
            replace_folder(staging / model, target, aside=aside)
    for model in plan["remove"]:
        target, aside = repo / model, staging / f"{model}.old"
        if target.is_dir() and not target.is_symlink():
            if aside.exists():
                remove_aside(aside, target)
            os.rename(target, aside)
        if aside.exists():
            remove_aside(aside, target, replaced=True)


def _write_models(
    staging: Path,
    names: ModelNames,
    options: TritonOptions,
    artifact: Path,
    meta: ModelMeta,
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """The preprocessing, ONNX and (with an engine) plan models into `staging`; the engine's
    sidecar fields, or None."""
    batching = options.batching
    _write_model(
        staging / names.preprocess,
        config.preprocess_config(names.preprocess, meta, batching),
        python_model="preprocess.py",
    )
    if options.embedding == "python":
        text = config.python_embedding_config(names.onnx, meta, batching, options.threads)
        _write_model(staging / names.onnx, text, python_model="embedding.py", onnx=artifact)
    else:
        trt = meta.precision if options.trt_accelerator else None
        workspace = (
            engine_settings(options.engine)["workspace_mb"] if options.engine else DEFAULT_WORKSPACE_MB
        )
        text = config.onnx_config(names.onnx, meta, batching, options.device == "gpu", trt, workspace)
        _write_model(staging / names.onnx, text, onnx=artifact)
    if options.engine is None:
        return None
    return _build_plan(staging, names, options, artifact, meta, say)


def _build_plan(
    staging: Path,
    names: ModelNames,
    options: TritonOptions,
    artifact: Path,
    meta: ModelMeta,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Build the TensorRT plan for this GPU (checked on the probe set, as `invedge build-engine`)."""
    from ...tensorrt.build import build_engine
    from ...verify.engines import probe_plan_check

    settings = engine_settings(options.engine)
    folder = staging / names.trt
    _write_model(folder, config.plan_config(names.trt, meta, options.batching, settings["dla_core"]))
    say(f"building a TensorRT plan for {names.trt} from {artifact.name} (takes minutes on a Jetson)…")
    info = build_engine(
        artifact,
        folder / "1" / "model.plan",
        meta.precision,
        settings["min_batch"],
        settings["opt_batch"],
        settings["max_batch"],
        settings["workspace_mb"],
        staging / "timing.cache",
        meta=meta,
        check=probe_plan_check(artifact, meta),
        dla_core=settings["dla_core"],
    )
    return {"plan": str(Path(names.trt) / "1" / "model.plan"), **info.to_json()}


def _write_model(
    folder: Path, text: str, *, python_model: str | None = None, onnx: Path | None = None
) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    if python_model is not None:
        shutil.copyfile(PYTHON_MODELS / python_model, version / "model.py")
    if onnx is not None:
        shutil.copyfile(onnx, version / "model.onnx")


def write_readme(repo: Path) -> Path:
    """README.md at the repository root, listing every invedge ensemble there (regenerated from the
    models' configs); README.invedge.md where a README.md there is not ours."""
    path = repo / README
    if path.exists():
        try:
            ours = path.read_text(encoding="utf-8", errors="replace").startswith(MARK)
        except OSError:
            ours = False
        if not ours:
            path = repo / README_BESIDE
    try:
        atomic_write_text(path, readme_text(repo, find_ensembles(repo)))
    except (OSError, WriteError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc.message
        raise WriteError(f"cannot write {path}: {reason or exc}", "Check the folder's permissions") from exc
    return path
