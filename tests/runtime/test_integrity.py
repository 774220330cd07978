"""An export folder's files against its report.json (invspread_edge_runtime/integrity.py).

What these show: a truncated artifact or one flipped byte fails `invedge verify` (exit 1, naming
the file and the command that rebuilds it) and `invedge embed` (one line), whichever way the file
is given (the folder, the file itself); an edited probe manifest fails too; the rebuild command
the error gives does rebuild; a folder without report.json keeps working; an artifact that is
not run is not hashed by `embed` (only `verify` checks them all).
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from tiny import flip, truncate

from invspread_edge_runtime.backends.select import find_artifacts
from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embedder import open_backend
from invspread_edge_runtime.files import sha256_file
from invspread_edge_runtime.integrity import ArtifactDamaged, check_artifact, read_report

ARTIFACTS = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx")


def invedge(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(create_app(), [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_error(err: str, *fragments: str) -> str:
    """The one error line, last on stderr, holding every fragment; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], err
    return errors[0]


@pytest.fixture
def export_copy(tiny_export, tmp_path) -> Path:
    """A private copy of the session's tiny export, free to damage."""
    return Path(shutil.copytree(tiny_export, tmp_path / "export", ignore=shutil.ignore_patterns(".*")))


@pytest.fixture
def images(image_folder) -> Path:
    return image_folder / "class0"


# --- what the export records ---------------------------------------------------------------------------


def test_report_records_every_artifact_and_the_probe_manifest(tiny_export):
    record, problem = read_report(tiny_export)
    assert problem is None and record is not None
    assert set(record.artifacts) == set(ARTIFACTS)
    for name, recorded in record.artifacts.items():
        assert recorded.sha256 == sha256_file(tiny_export / name)
        assert recorded.bytes == (tiny_export / name).stat().st_size
    assert record.probes_sha256 == sha256_file(tiny_export / "probes" / "probes.json")


# --- verify: a damaged artifact fails, never a warning --------------------------------------------------


def test_verify_fails_on_a_truncated_artifact(capsys, export_copy):
    truncate(export_copy / "model.int8-cpu.onnx")
    code, out, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu")
    assert code == 1 and "✓" not in out + err
    line = last_error(err, "model.int8-cpu.onnx is damaged", "report.json records", "--overwrite")
    assert "invedge export" in line and "--int8" in line and "--fp16" in line
    assert "damaged" in out and "model.onnx" in out  # the table: the others checked, this one named


@pytest.mark.parametrize("name", ARTIFACTS)
def test_verify_fails_on_one_flipped_byte(capsys, export_copy, name):
    flip(export_copy / name)
    code, out, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu", "--json")
    assert code == 1
    last_error(err, f"{name} is damaged", "sha256", "Rebuild it: invedge export")
    doc = json.loads(out)
    assert [d["file"] for d in doc["damaged"]] == [name]
    assert name not in {Path(r["model_file"]).name for r in doc["results"]}


def test_verify_of_one_artifact_names_the_damaged_others_without_failing(capsys, export_copy):
    truncate(export_copy / "model.int8-cpu.onnx")
    code, _, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu", "--precision", "fp32")
    assert code == 0 and "warning:" in err and "model.int8-cpu.onnx is damaged" in err
    code, _, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu", "--precision", "int8-cpu")
    assert code == 1
    last_error(err, "model.int8-cpu.onnx is damaged")


def test_verify_of_the_damaged_file_itself_fails(capsys, export_copy):
    flip(export_copy / "model.fp16.onnx")
    code, _, err = invedge(capsys, "verify", export_copy / "model.fp16.onnx", "--backend", "ort-cpu")
    assert code == 1
    last_error(err, "model.fp16.onnx is damaged")


def test_an_edited_probe_manifest_fails_verify(capsys, export_copy):
    """Valid JSON with every probe file's hash intact, a threshold loosened: only report.json's
    record of the manifest shows it."""
    manifest = export_copy / "probes" / "probes.json"
    doc = json.loads(manifest.read_text())
    doc["thresholds"]["int8-cpu"]["mean_cosine"] = 0.1
    manifest.write_text(json.dumps(doc, indent=2))
    code, out, err = invedge(capsys, "verify", export_copy, "--backend", "ort-cpu")
    assert code == 1 and out == ""
    last_error(err, "probes.json is damaged", "report.json records")


def test_the_rebuild_command_in_the_error_rebuilds(capsys, tiny_run, tmp_path):
    out = tmp_path / "exp"
    assert invedge(capsys, "export", tiny_run, "--out", out)[0] == 0
    flip(out / "model.onnx")
    code, _, err = invedge(capsys, "verify", out, "--backend", "ort-cpu")
    assert code == 1
    command = last_error(err).split("Rebuild it: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["invedge", "export"] and argv[-1] == "--overwrite"
    assert invedge(capsys, *argv[1:])[0] == 0
    code, _, err = invedge(capsys, "verify", out, "--backend", "ort-cpu")
    assert code == 0, err


# --- embed, and every other opener: one line -------------------------------------------------------------


@pytest.mark.parametrize("given", ["folder", "file"])
def test_embed_refuses_a_flipped_artifact_in_one_line(capsys, export_copy, images, tmp_path, given):
    flip(export_copy / "model.int8-cpu.onnx")  # the one ort-cpu runs
    model = export_copy if given == "folder" else export_copy / "model.int8-cpu.onnx"
    code, _, err = invedge(
        capsys, "embed", model, images, "--out", tmp_path / "e.emb", "--backend", "ort-cpu"
    )
    assert code == 1 and not (tmp_path / "e.emb").exists()
    assert len([x for x in err.splitlines() if x.strip()]) == 1  # refused before any work
    last_error(err, "model.int8-cpu.onnx is damaged", "--overwrite")


def test_embed_refuses_a_truncated_artifact_it_would_not_run(capsys, export_copy, images, tmp_path):
    """Not skipped with a warning: a folder with a truncated file was copied or written in part."""
    truncate(export_copy / "model.int8.onnx")
    code, _, err = invedge(capsys, "embed", export_copy, images, "--out", tmp_path / "e.emb")
    assert code == 1
    last_error(err, "model.int8.onnx is damaged", "report.json records")


def test_auto_stops_at_a_damaged_artifact_instead_of_trying_the_next_backend(export_copy):
    flip(export_copy / "model.int8-cpu.onnx")
    with pytest.raises(ArtifactDamaged, match=r"model\.int8-cpu\.onnx is damaged"):
        open_backend(export_copy, "auto")


def test_a_flipped_artifact_that_is_not_run_is_not_hashed_at_open(export_copy):
    """Hashing costs a read of the file: only the artifact chosen is hashed (`verify` checks all)."""
    flip(export_copy / "model.fp16.onnx")
    with open_backend(export_copy, "ort-cpu") as backend:
        assert Path(backend.info.model_path).name == "model.int8-cpu.onnx"


def test_a_folder_without_a_report_keeps_working(export_copy, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(export_copy / "model.onnx", bare / "model.onnx")
    flip(bare / "model.onnx", at=0.5)  # nothing to compare with: it runs (a checksum is the report's)
    assert set(find_artifacts(bare)) == {"fp32"}
    (export_copy / "report.json").unlink()
    with open_backend(export_copy, "ort-cpu") as backend:
        assert backend.info.precision == "int8-cpu"


def test_a_file_of_another_checkpoint_is_not_judged_by_the_report(export_copy, make_tiny_onnx, tmp_path):
    """report.json describes its own checkpoint's files; another's (the stale-file rules name it)
    is not called damaged."""
    other = make_tiny_onnx(tmp_path / "other.onnx")
    shutil.copy(other, export_copy / "model.onnx")
    check_artifact(export_copy / "model.onnx", "c" * 64)  # no error


def test_the_rebuild_command_names_the_run_the_folder_and_the_artifacts(tmp_path):
    run = tmp_path / "run"
    entries = [
        {"file": "model.onnx", "bytes": 1, "sha256": "a" * 64, "precision": "fp32"},
        {"file": "model.int8-cpu.onnx", "bytes": 1, "sha256": "b" * 64, "precision": "int8-cpu"},
    ]
    for folder, checkpoint, expected in [
        (run / "export", run / "checkpoint.safetensors", f"{run} --int8"),  # the default --out
        (tmp_path / "my exp", run / "checkpoint.safetensors", f"{run} --out '{tmp_path}/my exp' --int8"),
        (
            tmp_path / "e",
            tmp_path / "ep3.safetensors",
            f"{tmp_path}/ep3.safetensors --out {tmp_path}/e --int8",
        ),
    ]:
        folder.mkdir(parents=True)
        doc = {
            "metadata": {"invedge.checkpoint_sha256": "c" * 64},
            "checkpoint": {"path": str(checkpoint)},
            "artifacts": entries,
        }
        (folder / "report.json").write_text(json.dumps(doc))
        record, _ = read_report(folder)
        assert record.rebuild_hint() == f"Rebuild it: invedge export {expected} --overwrite"
