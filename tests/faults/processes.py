"""Real PostgreSQL, Redis and S3 (moto) processes that fault drills kill, freeze and restart.

Each object owns one server process on a free 127.0.0.1 port and a temporary directory. The port
stays the same across restarts, so URLs handed to the code under test stay valid.

The controls block until the server is down or answers again. In an async test whose traffic runs
on the same event loop, call them through `asyncio.to_thread` so the traffic keeps moving meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import boto3  # type: ignore[import-untyped]
import psycopg2
import redis
from botocore.config import Config  # type: ignore[import-untyped]
from psycopg2 import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

LOCALHOST = "127.0.0.1"
# Started and not yet stopped: killed at interpreter exit if a test run is interrupted.
_LIVE: set[ServerProcess] = set()


class ServerFailed(RuntimeError):
    """A server did not start, answer or stop in time; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it do not.
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def _alive(pid: int) -> bool:
    """Zombies count as gone: they hold no socket and nothing may reap them in a container."""
    found = _proc_state(pid)
    return found is not None and found[0] not in ("Z", "X")


def _stopped(pid: int) -> bool:
    found = _proc_state(pid)
    return found is None or found[0] in ("T", "t", "Z", "X")


def _descendants(root: int) -> list[int]:
    """Every live process below root, found by parent pid: PostgreSQL's backends each lead a
    session of their own, so signalling the postmaster's process group would miss them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        found = _proc_state(int(entry)) if entry.isdigit() else None
        if found is not None and found[0] not in ("Z", "X"):
            children.setdefault(found[1], []).append(int(entry))
    tree: list[int] = []
    frontier = [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        tree += below
        frontier += below
    return tree


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _dies_with_us() -> list[str]:
    """A command prefix that SIGKILLs the server when the thread that started it dies, so a test
    process killed by SIGTERM or SIGKILL (where atexit never runs) leaves no server behind.
    Start servers from a thread that lives as long as they should: the main thread, or
    asyncio.to_thread's pool, which lives as long as its event loop."""
    setpriv = shutil.which("setpriv")  # util-linux; it execs, so the server stays our child
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class ServerProcess:
    """One server process: start, stop, kill, freeze, thaw and restart, always on the same port."""

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, base_dir: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"faults-{self.name}-", dir=base_dir))
        self.port = free_port()
        self.log_path = self.dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid}>"

    @classmethod
    def installed(cls) -> bool:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """One quick probe: does the server serve a request right now?"""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Work before the first start (PostgreSQL's initdb)."""

    def _credentials(self) -> dict[str, Any]:
        """Popen's user/group arguments, when the server must not run as the current user."""
        return {}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """The process exists, frozen or not."""
        return self._process is not None and self._process.poll() is None

    @property
    def frozen(self) -> bool:
        pid = self.pid
        return pid is not None and _stopped(pid)

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise ServerFailed(f"{self.name} is already running (pid {self.pid})")
        self._prepare()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*_dies_with_us(), *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                **self._credentials(),
            )
        _LIVE.add(self)
        try:
            self.wait_ready(timeout)
        except ServerFailed:
            self.kill()
            raise

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the server answers; raise ServerFailed with its log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self._process.returncode if self._process else None
                raise ServerFailed(self._report(f"exited (code {code}) before answering"))
            if self.answers():
                return
            if time.monotonic() >= deadline:
                hint = " because it is frozen (thaw() it)" if self.frozen else ""
                raise ServerFailed(self._report(f"did not answer within {timeout:g} s{hint}"))
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly, SIGKILL after timeout. Thaws first: a stopped process cannot act
        on its stop signal."""
        if self._process is None or not self.running:
            _LIVE.discard(self)
            return
        self.thaw()
        self._process.send_signal(self.stop_signal)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the process and all its descendants at once: a crash, no shutdown code runs."""
        if self._process is None:
            return
        if self._process.poll() is None:
            pid = self._process.pid
            # Stopped first, it forks no child between the listing of its children and the kill.
            _signal([pid], signal.SIGSTOP)
            tree = [pid, *_descendants(pid)]
            _signal(tree, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # its own group (start_new_session): helpers too
            self._process.wait()
            if not _wait_until(lambda: not any(_alive(p) for p in tree), 5):
                raise ServerFailed(self._report("left processes behind after SIGKILL"))
        _LIVE.discard(self)

    def freeze(self) -> None:
        """SIGSTOP the process and all its descendants: a hung server. Its sockets stay open, so
        clients connect (the kernel completes the handshake) and then wait for an answer."""
        pid = self.pid
        if pid is None:
            raise ServerFailed(self._report("cannot be frozen: it is not running"))
        _signal([pid], signal.SIGSTOP)  # first, so it forks no child the listing would miss
        tree = [pid, *_descendants(pid)]
        _signal(tree, signal.SIGSTOP)
        if not _wait_until(lambda: all(_stopped(p) for p in tree), 2):
            raise ServerFailed(self._report("did not stop on SIGSTOP within 2 s"))

    def thaw(self) -> None:
        """SIGCONT the process and all its descendants; harmless when it is not frozen."""
        pid = self.pid
        if pid is not None:
            _signal([*_descendants(pid), pid], signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop cleanly if running (for a crash, kill() first), then start on the same port."""
        self.stop(timeout)
        self.start(timeout)

    def ensure_running(self, timeout: float = 10.0) -> None:
        """Undo what a drill left behind: thaw a frozen server, start a stopped or killed one."""
        if self.running:
            self.thaw()
            self.wait_ready(timeout)
        else:
            self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its directory, data and log included."""
        self.stop(timeout=5)
        self._remove()

    def _remove(self) -> None:
        """Delete what the server leaves after it is gone for good."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _report(self, what: str) -> str:
        return (
            f"{self.name} on {LOCALHOST}:{self.port} {what}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill()
        server._remove()


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL in Debian's layout, else the one on PATH, else None."""
    debian = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    debian.sort(
        key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0
    )
    if debian:
        return debian[-1]
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


@dataclass(frozen=True)
class Database:
    """One database of a cluster, with the URLs the app's settings take."""

    cluster: PostgresCluster
    name: str

    @property
    def url(self) -> str:
        return self.cluster.url_for(self.name)

    @property
    def async_url(self) -> str:
        return self.cluster.url_for(self.name, driver="asyncpg")


class PostgresCluster(ServerProcess):
    """A PostgreSQL cluster of its own: initdb on first start, trust auth, fsync off.

    As root the server runs as the `postgres` OS user (PostgreSQL refuses root), so base_dir must
    be reachable by that user: the system temp dir (the default) is, pytest's tmp_path is not.
    fsync off loses nothing on kill(): committed WAL is already in the kernel's page cache; only
    an OS crash would lose it.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: sessions rolled back, a checkpoint, exit

    def __init__(self, base_dir: Path | None = None, *, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise ServerFailed("PostgreSQL is not installed: no initdb/postgres found")
        self.bin_dir = found
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerFailed("running as root needs a `postgres` OS user") from None
        super().__init__(base_dir)
        self.data_dir = self.dir / "data"
        if self._owner is not None:
            os.chown(self.dir, self._owner.pw_uid, self._owner.pw_gid)

    @classmethod
    def installed(cls) -> bool:
        return postgres_bin_dir() is not None

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    @property
    def async_url(self) -> str:
        return self.url_for("postgres", driver="asyncpg")

    def url_for(self, database: str, *, driver: str | None = None) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@{LOCALHOST}:{self.port}/{database}"

    def command(self) -> list[str]:
        settings: dict[str, object] = {
            "listen_addresses": LOCALHOST,
            "port": self.port,
            "unix_socket_directories": self.dir,
            "fsync": "off",
            # Segments under the data dir, not /dev/shm: a crash leaves nothing outside self.dir.
            "dynamic_shared_memory_type": "mmap",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), *options]

    def answers(self) -> bool:
        try:
            self.connect(timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    def connect(self, database: str = "postgres", *, timeout: float = 5.0) -> Any:
        """A psycopg2 connection; libpq waits at least 2 s whatever the timeout."""
        return psycopg2.connect(self.url_for(database), connect_timeout=max(2, round(timeout)))

    def create_database(self, name: str) -> Database:
        self._run_admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return Database(self, name)

    def drop_database(self, name: str) -> None:
        self._run_admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def _run_admin(self, statement: sql.Composable) -> None:
        with contextlib.closing(self.connect()) as conn:
            conn.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
            with conn.cursor() as cursor:
                cursor.execute(statement)

    def _prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        initdb = [
            str(self.bin_dir / "initdb"),
            *("-D", str(self.data_dir), "-U", "postgres", "--auth=trust"),
            *("--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"),
        ]
        with self.log_path.open("ab") as log:
            done = subprocess.run(
                initdb,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                timeout=60,
                check=False,
                **self._credentials(),
            )
        if done.returncode != 0:
            raise ServerFailed(self._report(f"initdb failed (code {done.returncode})"))

    def _remove(self) -> None:
        # A killed postmaster leaves its interlock System V segment; the next start would remove
        # it, but after the last one only the id in postmaster.pid says which it is.
        with contextlib.suppress(OSError, IndexError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            subprocess.run(["ipcrm", "-m", lines[6].split()[1]], capture_output=True, check=False)
        super()._remove()

    def _credentials(self) -> dict[str, Any]:
        # Popen's own setuid, without su/runuser in between: the postmaster stays our child.
        if self._owner is None:
            return {}
        return {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}


class RedisServer(ServerProcess):
    """redis-server without persistence: a kill or restart empties it, like a replaced node."""

    name = "redis"

    @classmethod
    def installed(cls) -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", LOCALHOST, "--dir", str(self.dir)),
            *("--save", "", "--appendonly", "no"),
        ]

    def answers(self) -> bool:
        client = redis.Redis(
            host=LOCALHOST,
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),  # one probe is one attempt: wait_ready does the polling
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


class S3Server(ServerProcess):
    """moto's S3 server as a process of its own (ThreadedMotoServer can be neither killed nor
    frozen). moto keeps everything in memory: after kill() or restart() the server is empty, so
    the test recreates its bucket with create_bucket() before the code under test needs it."""

    name = "s3"

    @classmethod
    def installed(cls) -> bool:
        return all(importlib.util.find_spec(module) for module in ("moto", "flask", "werkzeug"))

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)]

    def answers(self) -> bool:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP error is still an answer
        except OSError:
            return False

    def client(self, *, timeout: float = 5.0) -> Any:
        """A boto3 S3 client that fails after one attempt of at most timeout seconds."""
        config = Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=config,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)
