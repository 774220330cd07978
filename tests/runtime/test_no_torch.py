"""The runtime without torch: real images embedded, indexed and searched with torch unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: the runtime must not need it")
            return None

    sys.meta_path.insert(0, Blocker())
    from invspread_edge_runtime.cli import create_app, run

    codes = []
    for argv in {commands!r}:
        app = create_app()
        codes.append(run(app, argv))
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps({{"codes": codes, "loaded": loaded}}))
    """
)


def run_blocked(blocked: list[str], commands: list[list[str]], cwd) -> tuple[dict, str]:
    script = BLOCKER.format(blocked=blocked, commands=commands)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "blocked, searcher",
    [(["torch", "torchvision", "onnx"], "faiss-flat"), (["torch", "torchvision", "onnx", "faiss"], "numpy")],
)
def test_embed_index_search_without_torch(tiny_export, image_folder, tmp_path, blocked, searcher):
    if searcher == "faiss-flat":
        pytest.importorskip("faiss")
    query = sorted((image_folder / "class1").glob("*.jpg"))[0]
    commands = [
        ["embed", str(tiny_export), str(image_folder), "--out", "g.emb"],  # export folder: picks int8-cpu
        ["index", "build", "g.emb", "--out", "g.index"],
        ["search", "g.index", str(query), "--k", "3", "--json"],
    ]
    result, output = run_blocked(blocked, commands, tmp_path)
    assert result == {"codes": [0, 0, 0], "loaded": []}, output
    assert f'"searcher": "{searcher}"' in output
    assert f'"id": "class1/{query.name}"' in output
    assert "model.int8-cpu.onnx" in output


@pytest.mark.parametrize(
    "statement",
    [
        "import invspread_edge_runtime.cli",
        "from invspread_edge_runtime.cli import create_app; create_app()",
        "import invspread_edge_runtime as r; r.Embedder, r.Index",
    ],
)
def test_importing_the_cli_pulls_no_heavy_module(statement):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "invspread_edge_runtime" in modules
    heavy = {"torch", "torchvision", "onnx", "onnxruntime", "tensorrt", "faiss", "cuda"} & modules
    assert not heavy, f"'{statement}' imported {sorted(heavy)}"
