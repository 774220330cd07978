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
    """A gallery index (file or search) that is damaged, foreign or incompatible."""


class EmbeddingsError(InvedgeError):
    """An embeddings folder that is missing, unfinished, damaged, foreign or incompatible."""


class EngineError(InvedgeError):
    """A TensorRT engine that cannot be built, loaded or run."""


class AccuracyError(InvedgeError):
    """A converted model whose accuracy fell past the allowed bound."""


class NonFiniteError(InvedgeError):
    """NaN or infinite numbers where finite ones are needed: a training loss that diverged, the
    weights it left, the embeddings of such a model. Never silently averaged, indexed or saved."""


class ConfigError(InvedgeError, ValueError):
    """An option or argument value outside what is allowed (also a ValueError, for library callers)."""


class LockedError(InvedgeError):
    """Another process is writing the same output (see locks.py)."""


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
