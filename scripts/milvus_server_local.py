"""Start a real Milvus server (PyPI's `milvus==2.3.5`: Milvus standalone, the C++ engine of a Milvus
cluster, with embedded etcd and local storage) for people, tests and benchmarks. Its client port needs
a token, but Milvus 2.3 binds it, its internal gRPC ports and its metrics port on every interface: run
it on a machine you trust or behind a firewall (embedded etcd alone listens on loopback only).

    make milvus-server DATA=/tmp/milvus-data                 # or:
    .venv/bin/python scripts/milvus_server_local.py --data /tmp/milvus-data [--port 19530]
    export MILVUS_TOKEN=$(cat /tmp/milvus-data/token)
    invedge index build photos.emb --store milvus://127.0.0.1:PORT --collection photos

The package's own `milvus-server` wrapper is not used to run it: it picks the metrics port itself
(the first free one from 9091, not settable), moves a given port up when it is taken (two servers
starting at once race for the same ones), leaves embedded etcd on its defaults (2379, and the peer
port 2380, which no flag sets) and, killed, leaves its `bin/milvus` child running. This takes the
package's binaries and config template and runs `bin/milvus run standalone` itself:
- every port is chosen free on 127.0.0.1 and written explicitly: the proxy (the client port), each
  coordinator's and node's gRPC port, the metrics/health port (env METRICS_PORT) and embedded etcd's
  client and peer ports (an etcd yaml named by env ETCD_CONFIG_PATH, i.e. `etcd.config.path`);
- each component advertises 127.0.0.1 (`ip:`), embedded etcd listens on 127.0.0.1 only. Milvus 2.3's
  gRPC servers and its metrics server bind every interface (`:PORT`) whatever the config says; the
  internal gRPC ports ask for no login;
- authorization is on: once the server answers, root's password is changed from Milvus' default
  (`Milvus`) to a random secret, kept in DATA/token (mode 600) as the token `root:SECRET` that clients
  pass (MILVUS_TOKEN); the default password works only between the proxy's first answer and that
  change (the readiness call that got it, then the change: under 3 s measured), on a new data folder;
- the binary runs in a session of its own; `kill()` signals the whole process group and waits; on
  Linux it is also SIGKILLed when this process dies (PR_SET_PDEATHSIG, set by a spawning thread that
  lives as long as this process), so a killed test worker leaves no server behind;
- sessions live 10 s (the template's 30 s hold a restart after a kill back that long);
- the binaries are unpacked once into .cache/milvus-server/VERSION/bin (about 3 s), shared by servers.
Ready means a pymilvus call answered, not just a TCP accept. Ctrl-C, SIGTERM or SIGHUP (at start too)
stops the whole group.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "milvus-server"
INSTALL = "make install (the dev extra holds milvus==2.3.5, Linux x86_64 only)"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
START_TRIES = 2  # ports are chosen free, then bound by the server: another process may take one between
STOP_GRACE_S = 10.0  # a clean stop of 2.3 can take longer than this; then SIGKILL (its WAL survives it)
# the config template's port keys, each given a free loopback port
PORT_KEYS = (
    "etcd_port",
    "root_coord_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)
EXTRA_PORTS = ("etcd_peer_port", "metrics_port")
_TEMPLATE_VALUE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*(?:\([a-z]+\))?\s*(?::\s*([^}]*?))?\s*\}\}")
_IP_LINE = re.compile(r"^(\s+)ip:\s*(#.*)?$", re.MULTILINE)
_SESSION_TTL = re.compile(r"^(  session:\n    ttl:) *\d+", re.MULTILINE)
_TIME_TICK = re.compile(r"^(  timeTickInterval:) *\d+", re.MULTILINE)  # the proxy's, in ms
# how long a killed server's sessions hold a restart back (the template's 30 s: a restart after a kill
# waits that long before it serves); each live component renews its own every third of it
SESSION_TTL_S = 10
DEFAULT_PASSWORD = "Milvus"  # root's password in a new Milvus, changed as soon as it answers
TOKEN_FILE = "token"  # in the data folder: `root:SECRET`, what clients pass as MILVUS_TOKEN
EXPOSED = (
    "note: Milvus 2.3 binds its client port (which needs the token), its internal gRPC ports (which do "
    "not) and its metrics port on every interface: run it on a machine you trust or behind a firewall"
)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Every server is spawned by this one thread: PR_SET_PDEATHSIG fires when the *thread* that forked the
# child exits, so a server started from a short-lived thread would die with it; this one lives as
# long as the process (a server then dies with the process, even SIGKILLed)
_spawner = ThreadPoolExecutor(1, thread_name_prefix="milvus-spawner")
_running: set[MilvusServer] = set()  # killed when this process exits: a server outlives its parent otherwise


@atexit.register
def _kill_running() -> None:
    for server in list(_running):
        server.kill()


class Exited(RuntimeError):
    """The server exited while starting (its log says why)."""


def package() -> Path | None:
    """The installed `milvus` package's folder (its binaries and config template), or None."""
    with contextlib.suppress(ImportError):
        import milvus

        return Path(milvus.__file__).parent
    return None


def available() -> str | None:
    """None when the Milvus server can run here, else why not and what to do (one line)."""
    if not (sys.platform == "linux" and os.uname().machine == "x86_64"):
        return f"milvus-server ships only for Linux x86_64 (this is {sys.platform} {os.uname().machine})"
    where = package()
    if where is None:
        return f"the milvus package (milvus-server) is not installed: run {INSTALL}"
    if not (where / "data" / "bin" / "milvus.lzma").is_file():
        return f"{where} holds no milvus binary: reinstall it with {INSTALL}"
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        return f"pymilvus is not installed: run {INSTALL}"
    return None


def version() -> str:
    import milvus

    return str(milvus.__version__)


def binaries() -> Path:
    """The folder holding `milvus` and its libraries, unpacked once per version (staged, then renamed
    into place: several servers may start at the same time)."""
    from milvus import _initialize_data_files

    target = CACHE / version() / "bin"
    if (target / "milvus").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        _initialize_data_files(str(staging))
        with contextlib.suppress(OSError):  # another server put it in place first
            (staging / "bin").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def die_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux SIGKILL the child when this process dies (None elsewhere); libc
    is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def set_it() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the request took effect
            os._exit(1)

    return set_it


def write_secret(path: Path, text: str) -> None:
    """`text` in `path`, readable by this user only (mode 600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text + "\n")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def config_text(template: str, values: dict[str, object], tick_ms: int | None = None) -> str:
    """The template with each `{{ key(type): default }}` replaced by `values[key]` (else its default;
    `authorization_enabled` among them), every component advertising 127.0.0.1, and the proxy's time
    tick `tick_ms` when given: a Strong read waits for the next tick (200 ms by default), so a test
    making hundreds of them sets it lower."""

    def value(match: re.Match) -> str:
        key, default = match.group(1), match.group(2)
        got = values.get(key, default)
        if got is None:
            raise KeyError(f"the Milvus config template needs {key}")
        return str(got).lower() if isinstance(got, bool) else str(got)

    text = _IP_LINE.sub(r"\1ip: 127.0.0.1 \2", _TEMPLATE_VALUE.sub(value, template))
    text = _SESSION_TTL.sub(rf"\1 {SESSION_TTL_S}", text)
    return text if tick_ms is None else _TIME_TICK.sub(rf"\1 {int(tick_ms)}", text, count=1)


def etcd_text(client_port: int, peer_port: int) -> str:
    """Embedded etcd's own config (etcd's embed.Config yaml): client and peer URLs on loopback."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return (
        f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )


@dataclass(eq=False)
class MilvusServer:
    """A Milvus standalone server addressed as 127.0.0.1:`port` (free when not given; it listens on
    every interface), its data in `data`; its clients log in with `token` (root's password: `password`
    for a new data folder, else the data folder's own, else a new one)."""

    data: Path
    port: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    tick_ms: int | None = None  # the proxy's time tick (None: Milvus' 200 ms); see config_text
    password: str | None = field(default=None, repr=False)
    secured: bool = False  # root's password is known to be `password` (not Milvus' default)

    def __post_init__(self) -> None:
        self.data = Path(self.data).absolute()

    @property
    def store(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """What a client passes (pymilvus `token`, MILVUS_TOKEN): `root:SECRET`."""
        return f"root:{self.password}"

    @property
    def token_file(self) -> Path:
        return self.data / TOKEN_FILE

    @property
    def log(self) -> Path:
        return self.data / "logs" / "milvus-stdout.log"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> MilvusServer:
        """Start it (ports chosen on the first start, kept by restarts) and wait until it answers."""
        why = available()
        if why is not None:
            raise RuntimeError(why)
        if self.port is not None and not 0 < self.port < 65536:
            raise RuntimeError(f"port {self.port} is out of range: use 1..65535, or none")
        if self.port is not None and not self.ports and not bindable(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is taken: choose another --port, or none")
        if self.ports:  # a restart: the same ports
            self._run(timeout_s)
            return self
        given = self.port
        for attempt in range(START_TRIES):
            chosen = free_ports(len(PORT_KEYS) + len(EXTRA_PORTS) + (given is None))
            self.port = given if given is not None else chosen.pop()
            self.ports = dict(zip(PORT_KEYS + EXTRA_PORTS, chosen, strict=True))
            try:
                self._run(timeout_s)
                return self
            except Exited:  # a port chosen free was taken before it bound it: choose again
                if attempt == START_TRIES - 1:
                    raise
        return self

    def _run(self, timeout_s: float) -> None:
        self._write_configs()
        self._spawn()
        self._wait_ready(timeout_s)

    def _keep_password(self) -> None:
        """Root's secret: the one given, else the data folder's (a server it held before), else a new
        one, written there before the server starts (so that it is never lost)."""
        if self.password is None and self.token_file.is_file():
            self.password = self.token_file.read_text().strip().partition(":")[2] or None
        if self.password is None:
            self.password = secrets.token_urlsafe(18)
        write_secret(self.token_file, self.token)

    def _write_configs(self) -> None:
        configs, logs, storage = (self.data / name for name in ("configs", "logs", "data"))
        for folder in (configs, logs, storage):
            folder.mkdir(parents=True, exist_ok=True)
        self._keep_password()
        values: dict[str, object] = {
            **self.ports,
            "authorization_enabled": True,
            "proxy_port": self.port,
            "etcd_log_path": str(logs / "etcd.log"),
            "system_log_path": str(logs),
            "etcd_data_dir": str(storage / "etcd.data"),
            "local_storage_dir": str(storage),
            "rocksmq_data_dir": str(storage / "rocksmq"),
        }
        template = (package() / "data" / "config.yaml.template").read_text()
        (configs / "milvus.yaml").write_text(config_text(template, values, self.tick_ms))
        shutil.copy(package() / "data" / "glog.conf", configs / "glog.conf")
        (configs / "etcd.yaml").write_text(etcd_text(self.ports["etcd_port"], self.ports["etcd_peer_port"]))

    def _spawn(self) -> None:
        folder = binaries()
        env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.ports["metrics_port"]),
            "ETCD_CONFIG_PATH": str(self.data / "configs" / "etcd.yaml"),
            "MILVUS_RUN_DIR": str(self.data / "run"),
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [str(folder), os.environ.get("LD_LIBRARY_PATH")])
            ),
        }
        with open(self.log, "ab") as out:
            self.proc = _spawner.submit(
                subprocess.Popen,
                [str(folder / "milvus"), "run", "standalone"],
                cwd=self.data,  # it reads configs/milvus.yaml from here
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() stops all of it
                preexec_fn=die_with_this_process(),
            ).result()
        _running.add(self)

    def _wait_ready(self, timeout_s: float) -> None:
        """Until a pymilvus call answers (the proxy accepts connections seconds before it serves); one
        that answers to Milvus' default password has it changed at once (`_secure`)."""
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its retries log tracebacks while it starts
        default = f"root:{DEFAULT_PASSWORD}"
        tokens = [self.token] if self.secured else [default, self.token]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                _running.discard(self)
                raise Exited(f"milvus exited at start (code {code}): see {self.log}")
            answered = self._accepts() and next((token for token in tokens if self._answers(token)), None)
            if answered:
                if answered == default:
                    self._secure()
                self.secured = True
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"milvus did not answer on {self.store} in {timeout_s:.0f} s: see {self.log}")

    def _answers(self, token: str) -> bool:
        """Whether a pymilvus call logged in with `token` answers."""
        from pymilvus import MilvusClient

        with contextlib.suppress(Exception):
            client = MilvusClient(uri=self.uri, token=token, timeout=5)
            try:
                client.list_collections(timeout=5)
                return True
            finally:
                client.close()
        return False

    def _secure(self) -> None:
        """Change root's password from Milvus' default to the secret (killing the server if it fails:
        it would serve anyone who knows the default)."""
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=self.uri, token=f"root:{DEFAULT_PASSWORD}", timeout=5)
            try:
                client.update_password("root", DEFAULT_PASSWORD, self.password, timeout=10)
            finally:
                client.close()
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"could not change root's default password: {exc}; see {self.log}") from exc

    def _accepts(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self, sig: int = signal.SIGKILL, grace_s: float = STOP_GRACE_S) -> None:
        """Signal the whole process group and wait for the server to exit (SIGKILL after `grace_s`)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):  # anything left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        _running.discard(self)

    def stop(self) -> None:
        """A clean stop (SIGTERM to the group; SIGKILL if it does not exit in time)."""
        self.kill(signal.SIGTERM)

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> MilvusServer:
        """Start again on the same data folder and ports (after kill or stop)."""
        self.kill()
        return self.start(timeout_s)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> MilvusServer:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="its data folder (made when missing)")
    parser.add_argument("--port", type=int, default=None, help="the client port (default: a free one)")
    parser.add_argument(
        "--tick-ms",
        type=int,
        default=None,
        help="the proxy's time tick, 10..1000 ms (default: Milvus' 200): a Strong read waits for the next one",
    )
    args = parser.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is out of range: use 1..65535, or leave it out for a free one")
    if args.tick_ms is not None and not 10 <= args.tick_ms <= 1000:
        parser.error(f"--tick-ms {args.tick_ms} is out of range: use 10..1000")
    if args.data.exists() and not args.data.is_dir():
        parser.error(f"--data {args.data} is a file: name a folder (made when missing)")
    why = available()
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 1
    print(EXPOSED, file=sys.stderr, flush=True)
    server = MilvusServer(args.data, args.port, tick_ms=args.tick_ms)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # before start: a stop while it starts stops it too
        signal.signal(sig, _interrupt)
    try:
        server.start()
        print(server.store, flush=True)
        print(f"its token: export MILVUS_TOKEN=$(cat {server.token_file})", file=sys.stderr, flush=True)
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = exc.filename or args.data
        print(f"error: cannot write {where}: {exc.strerror or exc}. Choose another --data", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the stop itself is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
