"""Runs user Python code in a sandboxed child: `Run(engine)` (spec §2.2.3), one request or many.

Stdlib only: the zygote imports this module before forking, so it must stay small. A child gets
a request as a JSON line followed by its raw body (runner/wire.py) and reports on fd 3 as JSON
lines (log, result, error).

With reuse (a warm worker kept for repeated runs of the same code, Lambda-style) requests come
one after another; after each run the child reports {"t": "done", "keep": bool} and, when `keep`,
waits for the next line. Every run executes the source afresh in a new module namespace.

The objects user code gets (`engine`, its print() streams) are in python_engine_api, a sibling
module in this folder (imported as a top-level module: this folder is on sys.path).
"""

from __future__ import annotations

import contextlib
import errno
import gc
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
from typing import TYPE_CHECKING, Any

# At run time this folder is on sys.path and the sibling is a top-level module; mypy sees the
# folder as the namespace package codeactions.runner.engines.
if TYPE_CHECKING:
    from .python_engine_api import (
        PROTOCOL_FD,
        Channel,
        Engine,
        Header,
        Log,
        LogStream,
        Params,
        Request,
        Result,
        Secrets,
    )
else:
    from python_engine_api import (
        PROTOCOL_FD,
        Channel,
        Engine,
        Header,
        Log,
        LogStream,
        Params,
        Request,
        Result,
        Secrets,
    )

__all__ = [
    "PROTOCOL_FD",
    "USER_FILE",
    "WARM_SOURCE",
    "Channel",
    "Engine",
    "Header",
    "Log",
    "LogStream",
    "Params",
    "Request",
    "Result",
    "Secrets",
    "execute",
    "serve",
    "warm",
]

USER_FILE = "action.py"


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
        request: dict[str, Any] = json.loads(self._buffer[:newline])
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


def _log_to_channel(channel: Channel) -> None:
    """Fresh streams for a run: what it writes to sys.stdout/sys.stderr (and their __stdout__ and
    __stderr__) becomes logs."""
    sys.stdout = sys.__stdout__ = LogStream(channel, "info", 1)  # type: ignore[misc, assignment]
    sys.stderr = sys.__stderr__ = LogStream(channel, "error", 2)  # type: ignore[misc, assignment]


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
        _log_to_channel(channel)
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
    _log_to_channel(channel)
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
