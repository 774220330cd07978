"""The tiny run every test shares, and the in-process `invedge`. A module of its own: `from conftest
import` can find tests/runtime/native_tensorrt/real_api/conftest.py instead, depending on which one a pytest
worker imported first."""

from __future__ import annotations

from pathlib import Path

FMNIST_MEAN = (0.2860, 0.2860, 0.2860)
FMNIST_STD = (0.3530, 0.3530, 0.3530)
# Two float32 computations of the tiny model's unit embeddings that sum in another order (another
# batch size or thread count, another kernel, a fused or compiled graph) agree to a few units in the
# last place: here PyTorch eager, ONNX Runtime and float64 differ by at most 6e-8, at every batch size.
# 1e-4 leaves a wide margin for other CPUs and kernels, and is still 40x below the distance between
# the two closest images of the test sets (4e-3): a swapped, dropped or repeated row fails.
EMBEDDING_ATOL = 1e-4
# `invedge train` options for a network that trains in seconds on the CPU (add --eval-every 0, -q, ...)
TINY_TRAIN_OPTIONS = ("--width", "8", "--embedding-dim", "16", "--batch-size", "32", "--precision", "fp32",
                      "--workers", "0")  # fmt: skip


def tiny_config(**overrides) -> dict:
    """The config keys every run has (training adds more); a width-8 network trains and exports fast."""
    cfg = dict(
        arch="cifar_resnet18",
        width=8,
        embedding_dim=32,
        image_size=28,
        mean=list(FMNIST_MEAN),
        std=list(FMNIST_STD),
        data="fashion-mnist",
    )
    cfg.update(overrides)
    return cfg


TESTS = Path(__file__).resolve().parent  # tests/
REPO = TESTS.parent
TRT_API = TESTS / "runtime" / "native_tensorrt" / "real_api"  # the TensorRT API checks (own process)


def invedge(*argv: object) -> int:
    """`invedge ARGV...` in this process, as its console script runs it: the exit code."""
    from invspread_edge_runtime.cli import create_app, run

    return run(create_app(), [str(a) for a in argv])


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Keep the first `keep` of the file (a copy cut short, a disk that filled)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def flip(path: Path, at: float = 0.6) -> Path:
    """Change one byte at `at` of the way through (damage that keeps the size)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x5A
    path.write_bytes(bytes(data))
    return path
