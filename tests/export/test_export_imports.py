"""The arrows go one way: the export package never imports the training package."""

from __future__ import annotations

import ast
from pathlib import Path

import invspread_edge_export


def test_export_does_not_import_training():
    folder = Path(invspread_edge_export.__file__).parent
    offenders = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n == "invspread_edge" or n.startswith("invspread_edge.")
            ]
    assert offenders == []
