"""The `Run(engine)` contract user Python code sees (spec §2.2.3), run inside a sandboxed child.

Stdlib only: the zygote imports this module before forking, so it must stay small. A child gets
a request as a JSON line followed by its raw body (runner/wire.py) and reports on fd 3 as JSON
lines (log, result, error).

With reuse (a warm worker kept for repeated runs of the same code, Lambda-style) requests come
one after another; after each run the child reports {"t": "done", "keep": bool} and, when `keep`,
waits for the next line. Every run executes the source afresh in a new module namespace.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import json
import linecache
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback
import types
from typing import Any

PROTOCOL_FD = 3
USER_FILE = "action.py"


class Channel:
    """Writes protocol lines on fd 3 as they happen, so nothing is lost if the run is killed."""

    def __init__(self, fd: int = PROTOCOL_FD) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        with self._lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except InterruptedError:
                    continue
                view = view[written:]


class _BinaryLogStream:
    def __init__(self, text: LogStream) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


class LogStream(io.TextIOBase):
    """sys.stdout / sys.stderr of the child: each line becomes a log on the protocol channel, so
    print() output keeps its order with engine.log calls. (Subprocesses still write to fd 1/2.)"""

    # Longer pieces without a newline are sent in parts: the child never holds a huge line.
    MAX_PENDING = 32768

    def __init__(self, channel: Channel, level: str, fd: int) -> None:
        self._channel = channel
        self._level = level
        self._fd = fd
        self._pending = ""
        self.buffer = _BinaryLogStream(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = self._pending + text
        lines = data.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._send(line)
        while len(self._pending) > self.MAX_PENDING:
            self._send(self._pending[: self.MAX_PENDING])
            self._pending = self._pending[self.MAX_PENDING :]
        return len(text)

    def _send(self, line: str) -> None:
        self._channel.send({"t": "log", "level": self._level, "msg": line})

    def flush(self) -> None:
        """Partial lines wait for their newline; `close_line` sends them at the end."""

    def close_line(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._send(line)


class Params:
    def __init__(self, params: dict[str, str]) -> None:
        self._params = params

    def get(self, key: str) -> str | None:
        return self._params.get(key)

    def items(self) -> Any:
        return self._params.items()


class Header:
    def __init__(self, header: dict[str, list[str]]) -> None:
        self._header = header

    def get(self, name: str) -> str:
        values = self._header.get(name)
        return values[0] if values else ""

    def items(self) -> Any:
        return self._header.items()


class Log:
    def __init__(self, channel: Channel, run_id: str, code_id: str, max_chars: int) -> None:
        self._runId = run_id
        self._codeId = code_id
        self._log_queue: list[dict[str, str]] = []
        self._channel = channel
        self._max_chars = max_chars
        self._count = 0

    def _process_log(self, level: str, content: Any) -> str:
        text = str(content)[: self._max_chars]
        self._count += 1
        self._channel.send({"t": "log", "level": level, "msg": text})
        return f"queued_log_{self._count}"

    def debug(self, content: Any = "") -> str:
        return self._process_log("debug", content)

    def info(self, content: Any = "") -> str:
        return self._process_log("info", content)

    def error(self, content: Any = "") -> str:
        return self._process_log("error", content)

    def flush_logs(self) -> None:
        """Kept for compatibility: logs are already sent as they are written."""


class Result:
    def __init__(self, channel: Channel, run_id: str) -> None:
        self._runId = run_id
        self._result = ""
        self._extra: dict[str, Any] = {"status_code": 200, "content_type": "text"}
        self._channel = channel

    def set(
        self,
        value: Any = "",
        status_code: Any = 200,
        content_type: Any = "text",
        **misspelled: Any,
    ) -> None:
        # The original's documentation writes `conten_type=`: honour it instead of failing.
        if "conten_type" in misspelled:
            content_type = misspelled.pop("conten_type")
        if misspelled:
            name = next(iter(misspelled))
            raise TypeError(f"set() got an unexpected keyword argument {name!r}")
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value)
            except Exception:
                text = str(value)
        if not isinstance(status_code, int | str) or isinstance(status_code, bool):
            status_code = str(status_code)
        self._result = text
        self._extra = {"status_code": status_code, "content_type": str(content_type)}
        self._channel.send(
            {
                "t": "result",
                "value": text,
                "status_code": status_code,
                "content_type": str(content_type),
            }
        )

    # The original's documentation also calls `engine.result(payload, content_type="json")`.
    __call__ = set

    def save(self) -> None:
        """Kept for compatibility: `set` already reports the result."""


class Secrets:
    """The project's secrets, as the original's engine offered them (no len, no iteration)."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self._secrets = secrets

    def get(self, key: str, default: Any = None) -> Any:
        return self._secrets.get(key, default)

    def has(self, key: str) -> bool:
        return key in self._secrets

    def keys(self) -> list[str]:
        """The names only."""
        return list(self._secrets.keys())

    def __getitem__(self, key: str) -> str:
        if key not in self._secrets:
            raise KeyError(f"Secret '{key}' not found")
        return self._secrets[key]

    def __contains__(self, key: object) -> bool:
        return key in self._secrets


class Request:
    def __init__(self, params: Params, body: str, header: Header, log: Log) -> None:
        self.params = params
        self.body = body
        self.header = header
        # The original gave a separate logger whose lines were lost; ours keeps them.
        self.log = log


class Engine:
    def __init__(self, request: dict[str, Any], channel: Channel) -> None:
        run_id = str(request.get("run_id", ""))
        code_id = str(request.get("code_id", ""))
        self.params = Params(dict(request.get("params") or {}))
        self.body = str(request.get("body") or "").strip()
        self.header = Header({k: list(v) for k, v in (request.get("headers") or {}).items()})
        self.log = Log(channel, run_id, code_id, int(request.get("max_log_chars") or 8000))
        self.result = Result(channel, run_id)
        self.request = Request(self.params, self.body, self.header, self.log)
        self.method = str(request.get("method") or "POST")
        # This run's own secrets: a warm worker builds a new Engine from each request.
        self.secrets = Secrets({str(k): str(v) for k, v in (request.get("secrets") or {}).items()})


def _user_traceback(exc: BaseException) -> str:
    """The traceback limited to the user's frames: no engine internals, no server paths."""
    tb_exc = traceback.TracebackException.from_exception(exc)
    # The whole chain (raise ... from ..., during handling of ...) keeps user frames only.
    todo, seen = [tb_exc], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.stack = traceback.StackSummary.from_list(
            [frame for frame in node.stack if frame.filename == USER_FILE]
        )
        todo.extend(c for c in (node.__cause__, node.__context__) if c is not None)
    return "".join(tb_exc.format()).rstrip()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file_size"
    return "exception"


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            if isinstance(stream, LogStream):
                stream.close_line()
        except Exception:
            pass


# What the last `execute` ended with, for deciding whether its process may serve another run.
_last_run: dict[str, Any] = {"exit": False, "kind": None}


def _fail(channel: Channel, exc: BaseException, message: str | None = None) -> int:
    _last_run["kind"] = _error_kind(exc)
    try:
        text = message if message is not None else _user_traceback(exc)
    except Exception:
        text = f"{type(exc).__name__}: {exc}"
    _flush_std()
    channel.send({"t": "error", "kind": _error_kind(exc), "message": text})
    return 1


def execute(request: dict[str, Any], channel: Channel) -> int:
    """Load the user's module as `action`, call `Run(engine)`; returns the exit code."""
    source = str(request.get("source") or "")
    _last_run["exit"], _last_run["kind"] = False, None
    try:
        engine = Engine(request, channel)
        module = types.ModuleType("action")
        module.__file__ = USER_FILE
        sys.modules["action"] = module
        linecache.cache[USER_FILE] = (len(source), None, source.splitlines(True), USER_FILE)
        code = compile(source, USER_FILE, "exec")
        exec(code, module.__dict__)
        run = module.__dict__.get("Run")
        if not callable(run):
            _flush_std()
            channel.send(
                {
                    "t": "error",
                    "kind": "exception",
                    "message": "the code does not define a function Run(engine)",
                }
            )
            return 1
        run(engine)
    except SystemExit as exc:
        _last_run["exit"] = True
        if exc.code in (None, 0):
            _flush_std()
            return 0
        return _fail(channel, exc, f"SystemExit: {exc.code}")
    except BaseException as exc:
        return _fail(channel, exc)
    _flush_std()
    return 0


WARM_SOURCE = """
import json
def Run(engine):
    engine.log.info(engine.params.get("a"))
    print("warm", engine.header.get("X-Warm"), engine.body, engine.secrets.has("W"))
    engine.result.set({"warm": [1, "é"]}, status_code=200, content_type="json")
"""


def warm() -> None:
    """Exercise the whole happy path once in a spare, before its request arrives.

    A forked child copies each memory page it first writes to, and CPython writes to every
    object it touches (reference counts): doing it here keeps those copies off the request path.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        channel = Channel(null)
        request = json.loads(
            json.dumps(
                {
                    "source": WARM_SOURCE,
                    "params": {"a": "1"},
                    "body": " b ",
                    "headers": {"X-Warm": ["1"]},
                    "secrets": {"W": "1"},
                    "method": "POST",
                    "run_id": "w",
                    "code_id": "w",
                }
            )
        )
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = LogStream(channel, "info", 1), LogStream(channel, "error", 2)
        try:
            execute(request, channel)
            _flush_std()
        finally:
            sys.stdout, sys.stderr = saved
            sys.modules.pop("action", None)
            linecache.cache.pop(USER_FILE, None)
    finally:
        os.close(null)


class _State:
    """Process-wide state user code may change, put back between two runs of a warm worker."""

    SIGNALS = [
        sig
        for sig in range(1, signal.NSIG)
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and sig < 32
    ]

    def __init__(self) -> None:
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.path = list(sys.path)
        self.recursion = sys.getrecursionlimit()
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.handlers: dict[int, Any] = {}
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                self.handlers[sig] = signal.getsignal(sig)
        self.tempdir = tempfile.tempdir
        self.socket_timeout = socket.getdefaulttimeout()
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.gc = gc.isenabled()

    def restore(self) -> bool:
        """Put everything back; False when that is not possible (the worker must not be reused)."""
        try:
            # Timers of the run must not fire during the next one.
            signal.alarm(0)
            for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
                signal.setitimer(timer, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
            if signal.sigpending():
                return False  # a signal of the run still waits to be delivered
            if gc.isenabled() != self.gc:
                (gc.enable if self.gc else gc.disable)()
            os.chdir(self.cwd)
            if dict(os.environ) != self.environ:
                os.environ.clear()
                os.environ.update(self.environ)
            sys.path[:] = self.path
            sys.setrecursionlimit(self.recursion)
            os.umask(self.umask)
            for sig, handler in self.handlers.items():
                if signal.getsignal(sig) is not handler and handler is not None:
                    signal.signal(sig, handler)
            tempfile.tempdir = self.tempdir
            socket.setdefaulttimeout(self.socket_timeout)
            sys.settrace(None)
            sys.setprofile(None)
            threading.settrace(None)
            threading.setprofile(None)
        except Exception:
            return False
        return True


def _alone() -> bool:
    """No thread and no child process of the run outlives it (they could act during the next)."""
    if threading.active_count() > 1:
        return False
    try:
        if len(os.listdir("/proc/self/task")) > 1:
            return False
    except OSError:
        return False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True  # no child at all
        except OSError:
            return False
        if pid == 0:
            return False  # a child still running
        # A finished child, collected: look for more.


class _Requests:
    """Run requests from the supervisor's pipe: a JSON line, then `body_size` bytes of body.

    Bytes are appended to one buffer and scanned once: a large body costs time linear in its size.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._scanned = 0

    def _fill(self) -> bool:
        # 64 KiB, the pipe's size: a larger buffer is mmapped for every read, which would sit
        # between the end of a run and the wait for the next (the supervisor watches that gap).
        chunk = os.read(self._fd, 65536)
        self._buffer += chunk
        return bool(chunk)

    def next(self) -> dict[str, Any] | None:
        """The next request with its `body` decoded; None at EOF (the supervisor retired us)."""
        while (newline := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            if not self._fill():
                return None
        request = json.loads(self._buffer[:newline])
        start = newline + 1
        end = start + max(0, int(request.pop("body_size", 0)))
        while len(self._buffer) < end:
            if not self._fill():
                return None
        request["body"] = self._buffer[start:end].decode("utf-8", "replace")
        del self._buffer[:end]
        self._scanned = 0
        return request


def _next_request(requests: _Requests, channel: Channel) -> dict[str, Any] | None:
    try:
        return requests.next()
    except Exception as exc:
        channel.send({"t": "error", "kind": "runner", "message": f"bad request: {exc}"})
        os._exit(2)


def _serve_many(stdin_fd: int, channel: Channel) -> None:
    """A warm worker: one run per request line, while each run leaves nothing behind."""
    # Requests arrive on a private fd; user code reading its stdin gets EOF, not the next request.
    requests = _Requests(os.dup(stdin_fd))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, stdin_fd)
    os.close(null)
    state = _State()
    while True:
        request = _next_request(requests, channel)
        if request is None:
            os._exit(0)  # the supervisor retired this worker
        # Fresh streams per run: no partial line of a run reaches the next one.
        sys.stdout = sys.__stdout__ = LogStream(channel, "info", 1)
        sys.stderr = sys.__stderr__ = LogStream(channel, "error", 2)
        code = execute(request, channel)
        _flush_std()
        sys.modules.pop("action", None)
        keep = (
            not _last_run["exit"]
            and _last_run["kind"] in (None, "exception")
            and _alone()
            and state.restore()
        )
        channel.send({"t": "done", "code": code, "keep": keep})
        if not keep:
            os._exit(code)


def serve(stdin_fd: int = 0, reuse: bool = False) -> None:
    """Child entry point: read the request from stdin until EOF, run it, exit.

    With `reuse`, serve one request line after another instead (see `_serve_many`).
    """
    channel = Channel()
    sys.argv = [USER_FILE]  # not the zygote's path and arguments
    if reuse:
        _serve_many(stdin_fd, channel)
        return
    sys.stdout = sys.__stdout__ = LogStream(channel, "info", 1)
    sys.stderr = sys.__stderr__ = LogStream(channel, "error", 2)
    request = _next_request(_Requests(stdin_fd), channel)
    if request is None:
        os._exit(0)  # retired without a run
    code = execute(request, channel)
    _flush_std()
    # Announce the end before exiting: tearing down the process and its namespaces takes the
    # kernel a few milliseconds the caller need not wait for.
    channel.send({"t": "done", "code": code})
    # os._exit: no atexit hooks or lingering threads keep a finished run alive.
    os._exit(code)
