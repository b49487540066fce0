"""What the parts of the supervisor share: its state, and the calls they make on each other.

The supervisor is one object built from parts, each in its own module (start-up, spares,
languages, dispatch, runs, warm workers, CPU budget, Go builds; see supervisor.py). This base
declares the state they all read and the methods one part calls on another, so each module can
be read (and type-checked) alone.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

from codeactions.runner import wire
from codeactions.runner.host import network
from codeactions.runner.host.boot import Boot
from codeactions.runner.host.cgroups import Cgroups
from codeactions.runner.host.slots import Child, Run, Slot, Timer

# A Go compile's answer: (binary path, None) or (None, error; "runner: ..." when not the code's).
CompileDone = Callable[[str | None, str | None], None]


class HostState(ABC):
    # The event loop and the API connection (supervisor.py).
    api: socket.socket
    selector: selectors.BaseSelector
    api_out: bytearray
    timers: list[Timer]
    # Settings and what start-up found (setup.py).
    s: dict[str, Any]  # the API's RunnerSettings, as sent in the "init" frame
    max_log_chars: int
    root: bool
    reuse: bool  # warm workers (any language) allowed
    python_reuse: bool  # ... and possible for Python here
    count_ipc: bool
    node_slots: bool
    capacity: int  # runs at once (the general slots)
    engines_dir: str
    base_dir: str
    go_cache_dir: str
    go_bin_dir: str
    build_uid: int
    cgroups: Cgroups
    child_cfg: dict[str, Any]  # the zygote's {"op": "config"}
    status: wire.IsolationStatus  # the constant part of wire.SupervisorStatus
    warnings: list[str]
    owner_filter: network.OwnerFilter | None
    slot_networks: network.SlotNetworks | None
    # Slots, runs and the zygote.
    slots: list[Slot]
    pending: deque[Run]
    running: int
    fd_owner: dict[int, tuple[Run, str]]
    pid_slot: dict[int, Slot]
    zygote: subprocess.Popen[bytes] | None
    zsock: socket.socket | None
    # Languages' starts (languages.py).
    boots: dict[str, Boot]
    announced: bool
    reported: dict[wire.Language, tuple[bool, str, int]]
    # Go builds (gobuilds.py).
    go_cache: dict[str, str]
    go_jobs: dict[str, list[CompileDone]]
    go_waiting: deque[tuple[str, str]]
    go_builders: list[int]
    go_touched: dict[str, float]

    # ---------------------------------------------------------------- supervisor.py

    @abstractmethod
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    @abstractmethod
    def send_api(self, message: dict[str, Any]) -> None: ...

    # ---------------------------------------------------------------- setup.py

    @abstractmethod
    def _prepare_dir(self, slot: Slot) -> None: ...

    # ---------------------------------------------------------------- spares.py

    @abstractmethod
    def _start_zygote(self) -> None: ...

    @abstractmethod
    def _spawn(self, slot: Slot) -> None: ...

    @abstractmethod
    def _retire_spare(self, slot: Slot, error: str) -> None: ...

    @abstractmethod
    def _clean(self, slot: Slot) -> None: ...

    # ---------------------------------------------------------------- languages.py

    @abstractmethod
    def _boot_of(self, slot: Slot) -> Boot: ...

    @abstractmethod
    def _missing(self, key: str) -> str: ...

    @abstractmethod
    def _refusal(self, language: str) -> str: ...

    @abstractmethod
    def _report(self, force: bool = False) -> None: ...

    @abstractmethod
    def _boot_failed(self, key: str, error: str, *, certain: bool = False) -> None: ...

    @abstractmethod
    def _boot_worked(self, key: str) -> None: ...

    @abstractmethod
    def _node_started_for(self, run: Run, outcome: wire.Outcome) -> None: ...

    # ---------------------------------------------------------------- dispatch.py

    @abstractmethod
    def _dispatch(self) -> None: ...

    @abstractmethod
    def _write_stdin(self, run: Run, first: bool = False) -> None: ...

    # ---------------------------------------------------------------- runs.py

    @abstractmethod
    def _read_child(self, fd: int) -> None: ...

    @abstractmethod
    def _timeout(self, run: Run) -> None: ...

    @abstractmethod
    def _kill_run(self, run: Run, reason: wire.FailureReason, message: str) -> None: ...

    @abstractmethod
    def _kill_slot(self, slot: Slot) -> None: ...

    @abstractmethod
    def _kill_slot_pids(self, slot: Slot) -> None: ...

    @abstractmethod
    def _slot_pids(self, slot: Slot) -> set[int]: ...

    @abstractmethod
    def _finish(self, run: Run) -> None: ...

    @abstractmethod
    def _finish_early(self, run: Run, reason: wire.FailureReason, message: str) -> None: ...

    @abstractmethod
    def _drop_child(self, slot: Slot) -> None: ...

    @abstractmethod
    def _close_child(self, child: Child) -> None: ...

    # ---------------------------------------------------------------- warm.py

    @abstractmethod
    def _reusable(self, run: Run, slot: Slot, outcome: wire.Outcome) -> bool: ...

    @abstractmethod
    def _recycle(self, slot: Slot, key: str) -> None: ...

    @abstractmethod
    def _retire_warm(self, slot: Slot) -> None: ...

    @abstractmethod
    def _keep_a_fresh_spare(self, key: str, kind: str = "node") -> bool: ...

    # ---------------------------------------------------------------- cpu.py

    @abstractmethod
    def _cpu_limit(self, run: Run) -> int: ...

    @abstractmethod
    def _limit_worker_cpu(self, run: Run, child: Child, seconds: int) -> None: ...

    @abstractmethod
    def _has_budget_for(self, child: Child, run: Run) -> bool: ...

    # ---------------------------------------------------------------- gobuilds.py

    @abstractmethod
    def _prepare_go(self, run: Run) -> None: ...

    @abstractmethod
    def _compile(self, source: str, done: CompileDone) -> None: ...
