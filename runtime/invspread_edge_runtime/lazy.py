"""Public names of a package, imported on first use: the root packages use it to keep torch (training,
export) or numpy, Pillow and the backends (runtime) out of `import package.errors` and the CLI's start."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` serving `names` ({name: ".module"}) from the package's modules."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
