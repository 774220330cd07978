"""A script of scripts/ (no package) as a module, for the tests that start what it starts
(milvus_server_local.py, tritonserver_local.py): the one way people start it is the one the tests use."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path) -> ModuleType:
    """`path` imported as the module named after its file, once per process."""
    if path.stem in sys.modules:
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it: its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
