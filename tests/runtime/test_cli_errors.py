"""The CLI edge (invspread_edge_runtime/cli.py `run`): one voice for every failure, whatever raised it.

A test command (`boom`) raises what each test asks for; the edge must turn it into one stderr line
and the right exit code, never a traceback. Runtime-only: no torch is imported here.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.errors import IndexFileError, Interrupted

RAISE: dict[str, BaseException] = {}


def _register_boom(app: typer.Typer) -> None:
    @app.command("boom")
    def boom(count: int = typer.Option(1, "--count", help="A number.")) -> None:
        """Raise what the test put in RAISE."""
        raise RAISE["exc"]

    @app.command("say")
    def say(text: str) -> None:
        """Print `text` to stdout and stderr, then fail naming it."""
        from invspread_edge_runtime import console

        console.out.print(f"id {text}", highlight=False)
        console.info(f"reading {text}")
        raise IndexFileError(f"{text} is damaged", "Embed it again")

    @app.command("ask")
    def ask() -> None:
        """Read from a prompt (end of input: click's Abort)."""
        typer.prompt("name")


def invedge(capsys, *argv: str, raising: BaseException | None = None) -> tuple[int, str, str]:
    if raising is not None:
        RAISE["exc"] = raising
    capsys.readouterr()
    code = run(create_app(_register_boom), list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str, prefix: str = "error:") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def test_invedge_error_is_one_line_exit_1(capsys):
    code, _, err = invedge(capsys, "boom", raising=IndexFileError("g.index is damaged", "Build it again"))
    assert code == 1 and one_line(err) == "error: g.index is damaged. Build it again"


def test_message_with_brackets_and_newlines_stays_one_literal_line(capsys):
    exc = IndexFileError("[Errno 5] [red]x[/red] in a.index\nsecond line", "Build it again")
    code, _, err = invedge(capsys, "boom", raising=exc)
    assert code == 1
    assert one_line(err) == "error: [Errno 5] [red]x[/red] in a.index second line. Build it again"


def test_a_file_name_that_is_not_utf8_is_shown_not_fatal(capsys):
    name = os.fsdecode(b"/data/\xff\xfe.png")
    code, _, err = invedge(capsys, "boom", raising=FileNotFoundError(errno.ENOENT, "No such file", name))
    assert code == 1
    line = one_line(err)
    assert "/data/" in line and ".png" in line and "Check the path" in line


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        (errno.ENOSPC, ("disk full while writing /out/g.index", "run the same command again")),
        (errno.EDQUOT, ("disk quota exceeded while writing /out/g.index", "run the same command again")),
        (errno.EROFS, ("cannot write /out/g.index", "writable")),
        (errno.EACCES, ("permission denied: /out/g.index", "permissions")),
        (errno.EPERM, ("permission denied: /out/g.index",)),
        (errno.ENOENT, ("not found: /out/g.index", "Check the path")),
        (errno.EISDIR, ("/out/g.index is a folder where a file is expected", "file")),
        (errno.ENOTDIR, ("/out/g.index: a file stands where a folder is expected",)),
        (errno.ENAMETOOLONG, ("file name too long: /out/g.index",)),
        (errno.EIO, ("/out/g.index: Input/output error", "run the same command again")),
    ],
)
def test_os_errors_name_the_file_and_the_next_step(capsys, code, fragments):
    exc = OSError(code, os.strerror(code), "/out/g.index")
    rc, _, err = invedge(capsys, "boom", raising=exc)
    line = one_line(err)
    assert rc == 1
    for fragment in fragments:
        assert fragment in line, line


def test_os_error_without_a_file_name_still_one_line(capsys):
    rc, _, err = invedge(capsys, "boom", raising=OSError(errno.ENOSPC, "No space left on device"))
    assert rc == 1 and "disk full" in one_line(err)


def test_unexpected_exception_is_one_line_with_the_traceback_in_a_file(capsys):
    rc, _, err = invedge(capsys, "boom", raising=ValueError("temperature must be positive"))
    line = one_line(err)
    assert rc == 1
    assert "internal error (ValueError: temperature must be positive)" in line and "report" in line
    saved = Path(line.rsplit(" ", 1)[-1])
    try:
        text = saved.read_text()
        assert "Traceback" in text and "ValueError: temperature must be positive" in text
    finally:
        saved.unlink(missing_ok=True)


def test_invedge_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("INVEDGE_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        invedge(capsys, "boom", raising=ValueError("boom"))
    with pytest.raises(IndexFileError):
        invedge(capsys, "boom", raising=IndexFileError("x"))


def test_ctrl_c_inside_a_command_is_one_line_and_130(capsys):
    rc, _, err = invedge(capsys, "boom", raising=KeyboardInterrupt())
    assert rc == 130
    assert "run the same command again" in one_line(err, "interrupted:")


def test_interrupted_says_what_was_kept(capsys):
    exc = Interrupted("saved 300 of 1,000 embeddings in g.emb", "Resume with: invedge embed M I --out g.emb")
    rc, _, err = invedge(capsys, "boom", raising=exc)
    assert rc == 130
    assert one_line(err, "interrupted:") == (
        "interrupted: saved 300 of 1,000 embeddings in g.emb. Resume with: invedge embed M I --out g.emb"
    )


def test_a_command_exit_code_comes_through(capsys):
    rc, _, err = invedge(capsys, "boom", raising=typer.Exit(130))
    assert rc == 130 and err == ""


def test_end_of_input_at_a_prompt_is_one_line(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc, _, err = invedge(capsys, "ask")
    assert rc == 1 and "aborted" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["boom", "--count", "many"], ("'--count'", "See 'invedge boom --help'")),
        (["boom", "--bogus"], ("--bogus", "See 'invedge boom --help'")),
        (["nosuchverb"], ("nosuchverb", "See 'invedge --help'")),
        (["index", "nosuch"], ("nosuch", "See 'invedge index --help'")),
        (["search", "x.index"], ("Missing argument", "See 'invedge search --help'")),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragments):
    rc, out, err = invedge(capsys, *argv)
    line = one_line(err)
    assert rc == 2 and out == ""
    for fragment in fragments:
        assert fragment in line, line


def test_help_and_bare_command_print_help(capsys):
    rc, out, err = invedge(capsys, "--help")
    assert rc == 0 and "Usage" in out and "boom" in out and err == ""
    rc, out, _ = invedge(capsys, "boom", "--help")
    assert rc == 0 and "--count" in out
    rc, out, _ = invedge(capsys)
    assert rc == 2 and "Usage" in out  # no_args_is_help: the help, exit 2 as click does


def test_a_real_ctrl_c_gives_one_line_and_130(tmp_path):
    """SIGINT to a real process inside a command: not click's silent exit, our line."""
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time, typer\n"
        "from invspread_edge_runtime.cli import create_app, run\n"
        "def reg(app):\n"
        "    @app.command('slow')\n"
        "    def slow() -> None:\n"
        "        print('ready', file=sys.stderr, flush=True)\n"
        "        time.sleep(30)\n"
        "    @app.command('other')\n"
        "    def other() -> None: ...\n"
        "sys.exit(run(create_app(reg), ['slow']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "ready"
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "run the same command again" in one_line(err, "interrupted:")


def test_a_name_that_is_not_utf8_never_breaks_the_output(capsys):
    """pytest's capture is a strict UTF-8 stream, as stdout is in a UTF-8 locale: a lone surrogate
    (a non-UTF-8 file name) is written escaped, and what is printed after it still comes out."""
    odd = os.fsdecode(b"/g/\xff\xfe.png")
    for _ in range(2):  # the second run proves nothing was left stuck in rich's buffer
        rc, out, err = invedge(capsys, "say", odd)
        assert rc == 1 and "Traceback" not in err and "internal error" not in err, err
        assert out.strip() == "id /g/\\udcff\\udcfe.png"
        assert err.splitlines() == [
            "reading /g/\\udcff\\udcfe.png",
            "error: /g/\\udcff\\udcfe.png is damaged. Embed it again",
        ]
