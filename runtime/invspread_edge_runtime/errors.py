"""Typed errors of the whole toolkit. The CLI turns each into one line with the next step.

Every library error a user can cause derives from `InvedgeError`. Anything else is a bug: the CLI
still prints one line, saying where it saved the traceback (INVEDGE_DEBUG=1 prints tracebacks).
"""

from __future__ import annotations


class InvedgeError(Exception):
    """A problem the user can fix. `hint` says how. `exit_code`: what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else self.message


class DataError(InvedgeError):
    """Missing, empty or unreadable data."""


class CheckpointError(InvedgeError):
    """A checkpoint or run folder that is missing, truncated, foreign or inconsistent."""


class ModelError(InvedgeError):
    """An ONNX model that is not ours, is damaged, or does not match what it is used with."""


class IndexFileError(InvedgeError):
    """A gallery index (a file, a Milvus collection) that is missing, damaged, foreign or incompatible."""


class GalleryError(InvedgeError):
    """Queries, new items or ids that a gallery cannot take (the rules of gallery.py); the gallery
    itself is fine. The service answers each subclass with its own status (serve/errors.py)."""


class EmptyGalleryError(GalleryError):
    """A search of a gallery that holds no items; `add`: the command that adds some."""

    def __init__(self, message: str, hint: str | None = None, add: str = "") -> None:
        super().__init__(message, hint)
        self.add = add


class KOutOfRangeError(GalleryError):
    """A k outside 1 to `count`, the gallery's size."""

    def __init__(self, message: str, hint: str | None = None, count: int = 0) -> None:
        super().__init__(message, hint)
        self.count = count


class SpaceMismatchError(GalleryError):
    """Vectors embedded by a model of another embedding space (`space_id`) than the gallery's (`ours`)."""

    def __init__(self, message: str, hint: str | None = None, space_id: str = "", ours: str = "") -> None:
        super().__init__(message, hint)
        self.space_id, self.ours = space_id, ours


class DimensionMismatchError(GalleryError):
    """Vectors of another dimension (`dim`) than the gallery's (`ours`)."""

    def __init__(self, message: str, hint: str | None = None, dim: int = 0, ours: int = 0) -> None:
        super().__init__(message, hint)
        self.dim, self.ours = dim, ours


class UnknownIdsError(GalleryError):
    """Ids to remove that the gallery does not hold (`ids`); nothing is removed then."""

    def __init__(self, message: str, hint: str | None = None, ids: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.ids = ids or []


class DuplicateIdsError(GalleryError):
    """New ids that repeat, or that the gallery holds already (`ids`)."""

    def __init__(self, message: str, hint: str | None = None, ids: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.ids = ids or []


class EmbeddingsError(InvedgeError):
    """An embeddings folder that is missing, unfinished, damaged, foreign or incompatible."""


class EngineError(InvedgeError):
    """A backend that cannot run the model here: a TensorRT engine that cannot be built, loaded or
    run, an ONNX Runtime provider that cannot start (a backend's, the GPU search graph's), no GPU,
    or no backend at all that runs the model."""


class AccuracyError(InvedgeError):
    """A converted model whose accuracy fell past the allowed bound."""


class NonFiniteError(InvedgeError):
    """NaN or infinite numbers where finite ones are needed: a training loss that diverged, the
    weights it left, the embeddings of such a model. Never silently averaged, indexed or saved."""


class ConfigError(InvedgeError, ValueError):
    """An option or argument value outside what is allowed (also a ValueError, for library callers)."""


class LockedError(InvedgeError):
    """Another process is writing the same output (see locks.py)."""


class WriteError(InvedgeError):
    """A file or folder that could not be written: disk full, no permission (files.os_error)."""


class UnreachableError(InvedgeError):
    """A service the command needs (a Milvus server, a Ray cluster) that does not answer."""


class SourceError(InvedgeError):
    """A video file, stream or camera that cannot be opened or read (sources/)."""


class Interrupted(InvedgeError):
    """Ctrl-C: the message says what was kept and the hint the command that resumes. Exit 130."""

    exit_code = 130


class MissingDependency(InvedgeError):
    """An optional package a command needs is not installed."""

    def __init__(self, package: str, purpose: str, install: str | None = None) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            f"Install it with: {install or 'pip install ' + package}",
        )
        self.package = package
