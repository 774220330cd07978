"""The layout's own promises: three packages whose imports go one way, a runtime that installs and
runs alone, one version, each package's API importable from its top, one owner of `invedge`.

The arrows: invspread_edge (training) -> invspread_edge_export -> invspread_edge_runtime. The runtime
never imports the other two; the toolkit's verbs reach `invedge` through entry points.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from tiny import REPO, invedge

# Each package and its folder, in the one direction imports may go (a package imports only those after it).
PACKAGES = {
    "invspread_edge": REPO / "invspread_edge",
    "invspread_edge_export": REPO / "export" / "invspread_edge_export",
    "invspread_edge_runtime": REPO / "runtime" / "invspread_edge_runtime",
}
ORDER = list(PACKAGES)
# What the runtime alone must run without: the other two packages and the toolkit's own dependencies.
TOOLKIT_ONLY = ["invspread_edge", "invspread_edge_export", "torch", "torchvision", "onnx", "onnxscript",
                "safetensors", "matplotlib"]  # fmt: skip
VERSION_FILE = REPO / "runtime" / "invspread_edge_runtime" / "VERSION"
DISTRIBUTIONS = ("invspread-edge", "invspread-edge-runtime")


# --- the import graph, read from the source --------------------------------------------------------


def imported_names(path: Path) -> list[tuple[str, int]]:
    """Every absolute module name `path` imports, with its line: top-level, in functions, by importlib."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((arg.value, node.lineno))
    return found


def _is_import_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in ("import_module", "__import__")


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) between our packages -> where ("file:line")."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            for name, line in imported_names(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    edges.setdefault((package, top), []).append(f"{path.relative_to(REPO)}:{line}")
    return edges


def test_imports_between_the_packages_go_one_way():
    upward = {
        f"{importer} imports {imported}": where
        for (importer, imported), where in package_edges().items()
        if ORDER.index(imported) < ORDER.index(importer)
    }
    assert upward == {}


def test_the_import_graph_reads_every_package():
    """The downward arrows exist, so the check above read the real folders (it cannot pass on none)."""
    assert {"invspread_edge", "invspread_edge_export"} <= {a for a, _ in package_edges()}
    assert set(package_edges()) >= {
        ("invspread_edge", "invspread_edge_export"),
        ("invspread_edge", "invspread_edge_runtime"),
        ("invspread_edge_export", "invspread_edge_runtime"),
    }


def test_every_folder_of_modules_is_a_package():
    """A folder of modules without `__init__.py` imports from the source tree (a namespace package)
    but is left out of the wheel that setuptools' package finder builds: the device install breaks."""
    loose = [
        str(folder.relative_to(REPO))
        for root in PACKAGES.values()
        for folder in [root, *root.rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py")) and not (folder / "__init__.py").exists()
    ]
    assert loose == []


def test_no_test_folder_shadows_a_module_we_import():
    """pytest puts test folders on sys.path: tests/runtime/tensorrt/ made `import tensorrt` find a namespace
    package of test files where TensorRT is not installed (and tests written for that case skipped)."""
    tests = REPO / "tests"
    imported = {
        name.split(".")[0]
        for folder in (*PACKAGES.values(), tests)
        for path in folder.rglob("*.py")
        for name, _ in imported_names(path)
    }
    folders = {p.name for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert "tensorrt" in imported and folders & imported == set()


# --- the runtime with the toolkit blocked, in this environment ------------------------------------------

BLOCKED_RUN = textwrap.dedent(
    """
    import contextlib, io, json, pkgutil, importlib, sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: the runtime must not need it")
            return None

    sys.meta_path.insert(0, Blocker())
    import invspread_edge_runtime
    from invspread_edge_runtime.cli import create_app, run

    modules, failed = 0, {{}}
    for info in pkgutil.walk_packages(invspread_edge_runtime.__path__, "invspread_edge_runtime."):
        try:
            importlib.import_module(info.name)
            modules += 1
        except Exception as exc:
            failed[info.name] = f"{{type(exc).__name__}}: {{exc}}"
    with contextlib.redirect_stdout(io.StringIO()) as help_text:
        help_code = run(create_app(), ["--help"])
    codes = [run(create_app(), argv) for argv in {commands!r}]
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps({{"modules": modules, "failed": failed, "help": [help_code, help_text.getvalue()],
                      "codes": codes, "loaded": loaded}}))
    """
)


@pytest.mark.parametrize(
    "blocked, searcher", [(TOOLKIT_ONLY, "faiss-flat"), ([*TOOLKIT_ONLY, "faiss"], "numpy")]
)
def test_runtime_runs_with_the_toolkit_blocked(tiny_export, image_folder, tmp_path, blocked, searcher):
    if searcher == "faiss-flat":
        pytest.importorskip("faiss")
    query = sorted((image_folder / "class1").glob("*.jpg"))[0]
    commands = [
        ["embed", str(tiny_export), str(image_folder), "--out", "g.emb"],  # export folder: picks int8-cpu
        ["index", "build", "g.emb", "--out", "g.index"],
        ["search", "g.index", str(query), "--k", "3", "--json"],
    ]
    script = BLOCKED_RUN.format(blocked=blocked, commands=commands)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {} and result["modules"] >= 30, result
    help_code, help_text = result["help"]
    assert help_code == 0 and all(verb in help_text for verb in ("embed", "search", "train")), help_text
    assert (result["codes"], result["loaded"]) == ([0, 0, 0], []), output
    assert f'"searcher": "{searcher}"' in output
    assert f'"id": "class1/{query.name}"' in output
    assert "model.int8-cpu.onnx" in output


# --- the runtime installed alone, in a fresh venv ---------------------------------------------------------

# pip's words for "this machine cannot fetch that package" (no index, no network): a skip, not a failure
OFFLINE = ("No matching distribution", "Could not find a version", "Failed to establish", "Network is unreachable",
           "Temporary failure in name resolution", "Max retries exceeded")  # fmt: skip


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv holding `pip install './runtime[cpu]'` and nothing else (built from a copy of runtime/)."""
    root = tmp_path_factory.mktemp("runtime_alone")
    source = root / "runtime"
    shutil.copytree(
        REPO / "runtime", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], root)
    if made.returncode != 0:
        pytest.skip(f"python -m venv does not work here: {made.stderr.strip()[-300:]}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--retries", "0", "--timeout", "15"]
    installed = _run([*pip, f"{source}[cpu]"], root, timeout=600)
    if installed.returncode != 0:
        lines = [line for line in installed.stderr.splitlines() if not line.startswith("WARNING")]
        if any(words in installed.stderr for words in OFFLINE):
            pytest.skip(f"pip cannot install the runtime's dependencies offline: {' | '.join(lines[-2:])}")
        pytest.fail(f"pip install './runtime[cpu]' failed:\n{installed.stderr[-3000:]}", pytrace=False)
    return venv


def test_runtime_alone_embeds_and_names_the_toolkit(runtime_venv, tiny_export, image_folder, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(image_folder.rglob("*.png"))[:6]:
        shutil.copy(path, images / path.name)
    python, invedge_script = str(runtime_venv / "bin" / "python"), str(runtime_venv / "bin" / "invedge")

    for module in ("torch", "invspread_edge", "invspread_edge_export"):
        probe = _run([python, "-c", f"import {module}"], tmp_path)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module

    embedded = _run([invedge_script, "embed", str(tiny_export), str(images), "--out", "g.emb"], tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    count = "import invspread_edge_runtime as r; print(len(r.load_embeddings('g.emb')))"
    counted = _run([python, "-c", count], tmp_path)
    assert counted.stdout.strip() == "6", counted.stderr

    train = _run([invedge_script, "train", "--epochs", "1"], tmp_path)
    assert train.returncode == 1 and train.stdout == ""
    assert len(train.stderr.strip().splitlines()) == 1, train.stderr
    assert "'invedge train' needs the Python package 'invspread-edge'" in train.stderr
    assert "the full toolkit" in train.stderr and "Traceback" not in train.stderr


# --- one version, one owner of `invedge`, each API from its top ------------------------------------------


def test_one_version():
    import invspread_edge
    import invspread_edge_export
    import invspread_edge_runtime

    version = VERSION_FILE.read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version)
    found = {
        "invspread_edge": invspread_edge.__version__,
        "invspread_edge_export": invspread_edge_export.__version__,
        "invspread_edge_runtime": invspread_edge_runtime.__version__,
        **{dist: metadata.version(dist) for dist in DISTRIBUTIONS},
    }
    assert found == dict.fromkeys(found, version)


def test_the_version_is_written_once():
    """No file outside tests/ repeats the version (tests may use one as sample metadata)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip(f"needs the git checkout to list the repository's files: {listed.stderr.strip()}")
    version = VERSION_FILE.read_text().strip()
    pattern = re.compile(rb"(?<![\w.])" + re.escape(version.encode()) + rb"(?![\w])")
    holders = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if name.startswith("tests/") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data and pattern.search(data):
            holders.append(name)
    assert holders == [str(VERSION_FILE.relative_to(REPO))]


@pytest.mark.parametrize(
    "package, names",
    [
        ("invspread_edge", ["train", "TrainConfig"]),
        ("invspread_edge_export", ["export_model", "ExportOptions"]),
        ("invspread_edge_runtime", ["Embedder", "Index"]),
    ],
)
def test_public_api_from_the_top(package, names):
    module = importlib.import_module(package)
    assert set(names) <= set(module.__all__)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []


def test_one_distribution_owns_invedge_and_the_toolkit_joins_by_entry_points(capsys):
    scripts = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "invedge"]
    assert [(ep.dist.name, ep.value) for ep in scripts] == [
        ("invspread-edge-runtime", "invspread_edge_runtime.cli:main")
    ]
    tomllib = pytest.importorskip("tomllib")
    declared = {
        name: tomllib.loads((REPO / name).read_text())["project"].get("scripts", {})
        for name in ("pyproject.toml", "runtime/pyproject.toml")
    }
    assert [name for name, scripts in declared.items() if "invedge" in scripts] == ["runtime/pyproject.toml"]

    verbs = {ep.name: ep for ep in metadata.entry_points(group="invedge.commands")}
    assert set(verbs) == {"train", "eval", "export", "augment-preview"}
    assert {ep.dist.name for ep in verbs.values()} == {"invspread-edge"}
    for verb in verbs:
        capsys.readouterr()
        assert invedge(verb, "--help") == 0
        shown = capsys.readouterr().out
        assert "needs the full toolkit" not in shown and "--" in shown, shown  # the verb, not a placeholder
