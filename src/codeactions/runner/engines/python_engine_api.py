"""What user code gets: the `engine` of `Run(engine)` and the sys.stdout/sys.stderr of print().

Each reports on the protocol channel (fd 3) as it is used. Stdlib only, like python_engine, which
imports it (the zygote imports both before forking).
"""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any

PROTOCOL_FD = 3


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


# User code sees these (type(), repr(), help()) as python_engine's, as before they moved here.
for _user_visible in (
    Channel,
    _BinaryLogStream,
    LogStream,
    Params,
    Header,
    Log,
    Result,
    Secrets,
    Request,
    Engine,
):
    _user_visible.__module__ = "python_engine"
del _user_visible
