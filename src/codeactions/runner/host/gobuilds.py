"""Go builds: compile jobs forked from the supervisor (each in a cgroup of its own, as an
unprivileged user, without network), a few at once, their binaries cached by source."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import selectors
import signal
import time
from typing import Any

from codeactions.runner import wire
from codeactions.runner.host.cgroups import MB, kill_cgroup
from codeactions.runner.host.linux import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    check,
    libc,
    mount,
    write_text,
)
from codeactions.runner.host.setup import SANDBOX_GO_DIR
from codeactions.runner.host.slots import Run
from codeactions.runner.host.state import CompileDone, HostState

BUILD_CACHE = "/run/codeactions-go-cache"  # where a Go compile job sees the cache


class GoBuilds(HostState):
    def _prepare_go(self, run: Run) -> None:
        def compiled(path: str | None, error: str | None) -> None:
            if path is None:
                reason: wire.FailureReason = (
                    "exception" if error and not error.startswith("runner:") else "runner"
                )
                self._finish_early(run, reason, (error or "").removeprefix("runner: "))
                return
            if self.child_cfg["mountns"] and os.path.dirname(path) == self.go_bin_dir:
                path = os.path.join(SANDBOX_GO_DIR, os.path.basename(path))
            run.argv = [path]
            from codeactions.runner.host import gocompile  # imported: it just compiled the source

            if gocompile.is_program(run.source):
                # No engine reads a request (nor its secrets): the program gets an empty stdin.
                run.program, run.stdout, run.payload = True, bytearray(), b""
            self.pending.append(run)
            self._dispatch()

        self._compile(run.source, compiled)

    def _compile(self, source: str, done: CompileDone) -> None:
        key = hashlib.sha256(source.encode()).hexdigest()
        cached = self.go_cache.get(key)
        if cached and os.path.exists(cached):
            self._used_binary(key, cached)
            done(cached, None)
            return
        if key in self.go_jobs:
            self.go_jobs[key].append(done)
            return
        go = self.boots["go"]
        if not go.ready() and go.waiting():
            done(None, f"runner: Go cannot compile on this runner now: {go.describe()}")
            return
        self.go_jobs[key] = [done]
        self.go_waiting.append((key, source))
        self._start_builds()

    def _used_binary(self, key: str, path: str) -> None:
        """Binaries are evicted least recently used first: mark this one used (once a minute)."""
        now = time.monotonic()
        if now - self.go_touched.get(key, 0.0) > 60:
            self.go_touched[key] = now
            with contextlib.suppress(OSError):
                os.utime(path)

    def _start_builds(self) -> None:
        """A few compiles at once (go_build_jobs), each in its own limited cgroup; others wait."""
        while self.go_waiting and self.go_builders:
            key, source = self.go_waiting.popleft()
            self._build(key, source, self.go_builders.pop())

    def _build(self, key: str, source: str, group: int) -> None:
        read_fd, write_fd = os.pipe()
        oom_before = self.cgroups.oom_kills(group) if group >= 0 else 0
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                try:
                    answer = self._build_in_child(source, group)
                except BaseException as exc:
                    answer = {"error": f"runner: cannot start the Go compiler: {exc}"}
                os.write(write_fd, json.dumps(answer).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks: list[bytes] = []
        # The compile kills itself at go_build_seconds; this is the backstop for the whole job.
        backstop = self.call_later(
            float(self.s["go_build_seconds"]) + 15, lambda: self._kill_build(pid, group)
        )

        def on_readable() -> None:
            data = os.read(read_fd, 65536)
            if data:
                chunks.append(data)
                return
            self.selector.unregister(read_fd)
            os.close(read_fd)
            backstop[2] = None
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            # The job is reaped (its pid may be reused): only what is left in its cgroup dies.
            self._empty_build_group(group)
            try:
                answer = json.loads(b"".join(chunks))
            except ValueError:
                answer = {"error": "runner: the Go compiler job died"}
            path = answer.get("path")
            error = answer.get("error")
            if path:
                self.go_cache[key] = path
                self._boot_worked("go")
            elif error and error.startswith("runner: "):
                self._boot_failed("go", error.removeprefix("runner: "))
            elif group >= 0 and self.cgroups.oom_kills(group) > oom_before:
                error = (
                    f"the code needs more than {self.s['go_build_memory_mb']} MB to compile "
                    "(memory limit of a Go compile)"
                )
            self.go_builders.append(group)
            for callback in self.go_jobs.pop(key, []):
                callback(path, error)
            self._start_builds()

        self.selector.register(read_fd, selectors.EVENT_READ, ("compile", on_readable))

    def _kill_build(self, pid: int, group: int) -> None:
        """The backstop: the job (not reaped yet, so the pid is still ours) and its cgroup."""
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        self._empty_build_group(group)

    def _empty_build_group(self, group: int) -> None:
        if group >= 0:
            for path in self.cgroups.slot_dirs[group].values():
                kill_cgroup(path)

    def _build_in_child(self, source: str, group: int) -> dict[str, Any]:
        """In the forked job: limits and an unprivileged uid, then the compile (no user code
        runs here, but the compiler itself can be made to use unbounded memory and disk)."""
        os.setsid()
        for path in self.cgroups.procs_files(group) if group >= 0 else []:
            write_text(path, str(os.getpid()))
        # Read as root: the engines' copy may sit where the build user cannot go (a work dir
        # under a private tmp).
        from codeactions.runner.host import gocompile

        engine_go = gocompile.ENGINE_GO.read_bytes()
        cache_dir = self.go_cache_dir
        drop = self.root and self.child_cfg["mountns"]
        if drop:
            # The cache's parent dirs may be closed to other users (a work dir under a private
            # tmp): show the cache alone at a fixed path, in a mount namespace of the job's own.
            check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")  # and no network
            mount("none", "/", None, MS_REC | MS_PRIVATE, None)
            mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            os.mkdir(BUILD_CACHE, 0o711)
            mount(self.go_cache_dir, BUILD_CACHE, None, MS_BIND, None)
            cache_dir = BUILD_CACHE
        seconds = int(self.s["go_build_seconds"])
        limits = {
            resource.RLIMIT_CPU: seconds,  # per process of the toolchain
            resource.RLIMIT_FSIZE: int(self.s["go_build_output_mb"]) * MB,
            resource.RLIMIT_CORE: 0,
        }
        for limit, value in limits.items():
            resource.setrlimit(limit, (value, value))
        if drop:
            os.setgroups([])
            os.setresgid(self.build_uid, self.build_uid, self.build_uid)
            os.setresuid(self.build_uid, self.build_uid, self.build_uid)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        try:
            path = gocompile.compile(
                source, go=self.s["go"], cache_dir=cache_dir, timeout=seconds, engine_go=engine_go
            )
        except gocompile.CompileFailed as exc:
            return {"error": exc.message}
        except Exception as exc:
            return {"error": f"runner: Go compiler failed: {exc}"}
        with contextlib.suppress(OSError):
            gocompile.trim_cache(cache_dir, int(self.s["go_cache_mb"]) * MB, keep=path)
        return {"path": os.path.join(self.go_bin_dir, os.path.basename(path))}
