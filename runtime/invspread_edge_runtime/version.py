"""The project's one version, read from VERSION: a leaf, so nothing above it is imported for it."""

from __future__ import annotations

from pathlib import Path

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
