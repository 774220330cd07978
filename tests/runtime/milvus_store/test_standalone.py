"""scripts/milvus_server_local.py: the real Milvus server listens only on the ports it was given (etcd's
client and peer ports on loopback, none of Milvus' defaults), its client port answers only its token, two
start at once without colliding, a kill stops its whole process group, a killed launcher (or one stopped
while it starts) leaves no server behind, and bad arguments are one-line errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import milvus_testing
import pytest
from milvus_testing import STANDALONE_GROUP

pytestmark = pytest.mark.xdist_group(STANDALONE_GROUP)
DEFAULT_PORTS = {2379, 2380, 9091, 19530, 19529, 19531, 13333, 21121, 21123, 21124, 22930, 53100}


def listening(pid: int) -> dict[int, str]:
    """The TCP ports process `pid` listens on, each with its address ("127.0.0.1", or "*" for any)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            loopback = address in ("0100007F", "0000000000000000FFFF00000100007F")
            anywhere = set(address) == {"0"}
            found[int(port, 16)] = "127.0.0.1" if loopback else "*" if anywhere else address
    return found


def test_it_listens_only_on_the_ports_it_chose(milvus_standalone):
    server = milvus_standalone
    ports = listening(server.proc.pid)
    chosen = set(server.ports.values()) | {server.port}
    assert set(ports) <= chosen and not set(ports) & DEFAULT_PORTS, (ports, server.ports)
    assert {server.port, server.ports["metrics_port"]} <= set(ports)
    etcd = (server.ports["etcd_port"], server.ports["etcd_peer_port"])
    assert all(ports.get(port) == "127.0.0.1" for port in etcd), ports  # embedded etcd: loopback only
    # Milvus 2.3's gRPC and metrics servers bind every interface whatever the config says
    assert set(ports.values()) <= {"127.0.0.1", "*"}


def test_two_start_at_once_and_a_kill_stops_the_whole_group(milvus_standalone, tmp_path):
    servers = [milvus_testing.local.MilvusServer(tmp_path / name) for name in ("a", "b")]
    failures: list[BaseException] = []

    def start(server) -> None:
        try:
            server.start()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        a, b = servers
        assert not (set(a.ports.values()) | {a.port}) & (set(b.ports.values()) | {b.port})
        group = a.proc.pid
        a.kill()
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)  # nothing of it is left
        from pymilvus import MilvusClient

        for running in (b, milvus_standalone):  # the others still answer
            client = MilvusClient(uri=running.uri, token=running.token, timeout=10)
            assert isinstance(client.list_collections(), list)
            client.close()
    finally:
        for server in servers:
            server.kill()


def test_a_port_taken_before_the_server_bound_it_is_chosen_again(monkeypatch, tmp_path):
    local = milvus_testing.local
    tries: list[dict[str, int]] = []

    def run(self, timeout_s: float) -> None:
        tries.append(dict(self.ports))
        if len(tries) == 1:
            raise local.Exited("bind: address already in use")

    monkeypatch.setattr(local, "available", lambda: None)
    monkeypatch.setattr(local.MilvusServer, "_run", run)
    server = local.MilvusServer(tmp_path).start()
    assert len(tries) == 2 and tries[0] != tries[1] and server.ports == tries[1]
    given = local.MilvusServer(tmp_path, port=server.port)
    tries.clear()
    given.start()
    assert given.port == server.port and len(tries) == 2  # a port given is kept; the others chosen again


def test_without_the_package_it_says_what_to_install(monkeypatch):
    local = milvus_testing.local
    monkeypatch.setattr(local, "package", lambda: None)
    if local.sys.platform == "linux" and local.os.uname().machine == "x86_64":
        assert "make install" in local.available()
    else:
        assert "Linux x86_64" in local.available()


def lists(server, token: str) -> list:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server.uri, token=token, timeout=5)
    try:
        return client.list_collections(timeout=5)
    finally:
        client.close()


def test_its_client_port_needs_the_token_and_the_default_password_is_gone(milvus_standalone):
    from pymilvus.exceptions import MilvusException

    server = milvus_standalone
    for wrong in ("", "root:Milvus", "root:wrong-password"):
        with pytest.raises(MilvusException):
            lists(server, wrong)
    assert isinstance(lists(server, server.token), list)
    assert server.token == milvus_testing.TOKEN
    assert server.token_file.read_text().strip() == server.token
    assert server.token_file.stat().st_mode & 0o777 == 0o600


def launcher(*argv: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(milvus_testing.SCRIPT), *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("--port", "0"), "--port 0 is out of range: use 1..65535"),
        (("--port", "70000"), "--port 70000 is out of range: use 1..65535"),
        (("--tick-ms", "5"), "--tick-ms 5 is out of range"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, argv, said):
    done = launcher("--data", tmp_path / "data", *argv)
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "Traceback" not in err and said in err.splitlines()[-1], err


def test_a_data_folder_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    done = launcher("--data", tmp_path / "file")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "Traceback" not in err and "is a file" in err.splitlines()[-1], err
    if milvus_testing.local.available() is None:  # a folder it cannot make: after the checks, at start
        done = launcher("--data", tmp_path / "file" / "data")
        _, err = done.communicate(timeout=60)
        assert done.returncode == 1, err
        assert milvus_testing.error_line(err).startswith(f"error: cannot write {tmp_path / 'file'}"), err


def milvus_pids(data: Path) -> set[int]:
    """The `milvus` processes running in data folder `data`."""
    found, folder = set(), str(data.resolve())
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() == "milvus" and os.readlink(proc / "cwd") == folder:
                found.add(int(proc.name))
    return found


def wait_for(check, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_killed_launcher_or_one_stopped_while_starting_leaves_no_server(tmp_path):
    why = milvus_testing.local.available()
    if why is not None:
        milvus_testing.skip_or_fail(why)
    killed, stopped = tmp_path / "killed", tmp_path / "stopped"
    procs = [launcher("--data", killed), launcher("--data", stopped)]
    try:
        a, b = procs
        assert wait_for(lambda: milvus_pids(stopped)), b.stderr.read() if b.poll() is not None else ""
        b.send_signal(signal.SIGTERM)  # while it starts: its handler is already there
        assert b.wait(timeout=60) == 0
        assert not milvus_pids(stopped)
        assert a.stdout.readline().startswith("milvus://127.0.0.1:"), a.stderr.read()  # ready
        server = milvus_pids(killed)
        assert len(server) == 1
        a.kill()  # SIGKILL: no handler, no atexit; the server dies with it all the same
        a.wait(timeout=10)
        assert wait_for(lambda: not milvus_pids(killed), 10), server
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        for pid in milvus_pids(killed) | milvus_pids(stopped):  # pragma: no cover - a failure above
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
