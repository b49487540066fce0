"""Go toolchain calls: compile an action with the engine (or a program alone) into a cached binary.

Stdlib only, standalone (no imports of the package): it runs in the supervisor's compile jobs, and
tests load it by path.

A source with a top-level `func main()` and no `func Run` is a whole program, as the original ran
Go codes (`go run`): it is built alone, without engine.go, and its standard output is the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ENGINE_GO = Path(__file__).resolve().parents[1] / "engines" / "go" / "engine.go"
MODULE = "action"  # engine.go strips this module prefix from panic stacks
ACTION_FILE = "action.go"
VERSION_TIMEOUT = 15.0

_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


class CompileFailed(Exception):
    """The source did not compile; the message is the compiler's, with file names only."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def go_available(go: str) -> bool:
    """True when `go` runs and reports its version."""
    try:
        _go_version(go)
    except (OSError, subprocess.SubprocessError, CompileFailed):
        return False
    return True


_TOKENS = re.compile(
    r"""//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`|[{}]""", re.DOTALL
)
_MAIN = re.compile(r"\bfunc\s+main\s*\(\s*\)")
_RUN = re.compile(r"\bfunc\s+Run\s*[(\[]")


def is_program(source: str) -> bool:
    """A top-level `func main()` and no top-level `func Run`: a program, not an action.

    Only declarations at the top level count: comments, strings and rune literals are skipped,
    and so is everything between braces (function bodies, literals).
    """
    top = []
    depth = 0
    position = 0
    for token in _TOKENS.finditer(source):
        if depth == 0:
            top.append(source[position : token.start()])
        position = token.end()
        text = token.group()
        if text == "{":
            depth += 1
        elif text == "}":
            depth = max(0, depth - 1)
        top.append(" ")
    if depth == 0:
        top.append(source[position:])
    declarations = "".join(top)
    return bool(_MAIN.search(declarations)) and not _RUN.search(declarations)


def compile(
    source: str, *, go: str, cache_dir: str, timeout: float = 60, engine_go: bytes | None = None
) -> str:
    """Return the path of the binary for `source`, building it unless the cache already has it.

    Binaries are keyed by the source, the engine and the toolchain, so changing any of them
    rebuilds. Concurrent calls for the same source build once (a lock file per key) and the
    binary appears atomically (rename), so a reader never sees a half-written file. A program
    (`is_program`) is built without the engine. `engine_go`: engine.go as read beforehand by a
    caller that then dropped privileges (the build user may not reach the engines' dir).
    """
    if engine_go is None:
        engine_go = ENGINE_GO.read_bytes()
    engine = b"" if is_program(source) else engine_go
    version = _go_version(go)
    kind = b"program" if not engine else b"action"
    key = hashlib.sha256(
        b"\0".join([kind, source.encode("utf-8"), engine, version.encode("utf-8")])
    ).hexdigest()
    cache = Path(cache_dir)
    bin_dir = cache / "bin"
    binary = bin_dir / key
    if binary.exists():
        return str(binary)

    # Sandbox uids may execute a binary whose name they are given, but not list the others
    # (their names are hashes of other tenants' sources) nor read the build caches.
    _make_dir(cache, 0o711)
    _make_dir(bin_dir, 0o711)
    for private in ("locks", "build", "tmp", "gocache", "gopath"):
        _make_dir(cache / private, 0o700)
    lock_path = cache / "locks" / f"{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # another caller built it while we waited
            return str(binary)
        work = Path(tempfile.mkdtemp(prefix="go-", dir=cache / "build"))
        try:
            _build(source, engine, version, go=go, cache=cache, work=work, timeout=timeout)
            built = work / "action.bin"
            built.chmod(0o755)
            os.replace(built, binary)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            # Safe to drop: whoever still waits on it re-checks for the binary before building.
            lock_path.unlink(missing_ok=True)
    return str(binary)


def _build(
    source: str, engine: bytes, version: str, *, go: str, cache: Path, work: Path, timeout: float
) -> None:
    (work / ACTION_FILE).write_text(source, encoding="utf-8")
    if engine:
        (work / "engine.go").write_bytes(engine)
    (work / "go.mod").write_text(f"module {MODULE}\n\ngo {_language_version(version)}\n")
    # A clean toolchain environment: nothing from the service, no network, caches in cache_dir.
    env = {
        "PATH": f"{Path(go).parent}:/usr/bin:/bin",
        "HOME": str(cache),
        "TMPDIR": str(cache / "tmp"),
        "GOCACHE": str(cache / "gocache"),
        "GOPATH": str(cache / "gopath"),
        "GO111MODULE": "on",
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOWORK": "off",
        "GOENV": "off",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
        "CGO_ENABLED": "0",
    }
    process = subprocess.Popen(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", "action.bin", "."],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the compiler's helpers die with it on timeout
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise CompileFailed("compile timed out") from None
    except BaseException:
        _kill_group(process)
        raise
    if process.returncode != 0:
        raise CompileFailed(_compiler_message(output.decode("utf-8", "replace"), work))


def _compiler_message(output: str, work: Path) -> str:
    """The compiler's lines with the temp dir and the package banner removed, plus hints."""
    text = output.replace(f"{work}/", "").replace(str(work), ".")
    text = re.sub(r"(^|\s)\./", r"\1", text, flags=re.MULTILINE)
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith(("# ", "go: finding module"))
    ]
    message = "\n".join(lines)
    # The compiler blames engine.go for a user's main; point at the user's line instead.
    own_main = re.search(r"(action\.go:\d+:\d+): other declaration of main", message)
    if own_main:
        lines = [
            line
            for line in lines
            if "main redeclared" not in line and "other declaration of main" not in line
        ]
        lines.insert(0, f"{own_main.group(1)}: main redeclared: the engine provides func main")
        message = "\n".join(lines)
    hints = []
    if own_main:
        hints.append("remove func main: the engine calls Run (without Run, main runs as a program)")
    if re.search(r"engine\.go:\d+:\d+: .*\bRun\b", message):
        hints.append("action.go must define func Run(engine *Engine) (or func main: a program)")
    if "found packages" in message:
        hints.append("action.go must start with `package main`")
    if "module lookup disabled" in message or "cannot find module providing package" in message:
        hints.append("only the Go standard library can be imported")
    if hints:
        message += "\n" + "\n".join(f"hint: {hint}" for hint in hints)
    return message or "compile failed"


def trim_cache(cache_dir: str, max_bytes: int, *, keep: str = "", recent: float = 60) -> None:
    """Evict the least recently used binaries and build-cache entries beyond `max_bytes`.

    Use is the file's mtime: the supervisor touches a binary when a run uses it, Go touches its
    cache entries. Files used in the last `recent` seconds (a run may be starting one) and
    `keep` stay. Eviction goes down to 90 % of the bound, so it does not run on every compile.
    """
    entries = []
    total = 0
    for sub in ("bin", "gocache"):
        for root, _, files in os.walk(os.path.join(cache_dir, sub)):
            for name in files:
                path = os.path.join(root, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                total += info.st_size
                entries.append((info.st_mtime, info.st_size, path))
    if total <= max_bytes:
        return
    cutoff = time.time() - recent
    target = max_bytes * 0.9
    for mtime, size, path in sorted(entries):
        if total <= target:
            break
        if mtime > cutoff or path == keep:
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size


def _go_version(go: str) -> str:
    with _versions_lock:
        if go in _versions:
            return _versions[go]
    result = subprocess.run(
        [go, "version"],
        capture_output=True,
        text=True,
        timeout=VERSION_TIMEOUT,
        env={"PATH": "/usr/bin:/bin", "GOTOOLCHAIN": "local", "GOTELEMETRY": "off"},
        check=False,
    )
    version = result.stdout.strip()
    if result.returncode != 0 or not version.startswith("go version"):
        raise CompileFailed(f"{go} does not work: {result.stderr.strip() or version}")
    with _versions_lock:
        _versions[go] = version
    return version


def _language_version(version: str) -> str:
    """`go version go1.19.8 linux/amd64` -> `1.19` for the go.mod directive."""
    found = re.search(r"go(\d+)\.(\d+)", version.removeprefix("go version "))
    return f"{found.group(1)}.{found.group(2)}" if found else "1.17"


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours: its owner chose the mode
        path.chmod(mode)  # whatever the umask


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
