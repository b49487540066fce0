"""The seccomp filter of a sandboxed child: kernel interfaces user code has no business with."""

from __future__ import annotations

import ctypes

from codeactions.runner.host.linux import check, libc

# A deny-list of kernel interfaces user code has no business with (x86_64 only).
# Namespaces (unprivileged user namespaces would hand it a full capability set over a large
# kernel surface), mounts, ptrace and cross-process memory access, eBPF, perf, io_uring,
# keyrings, kernel modules, kexec, swap, reboot, clock and host name changes.
SECCOMP_DENY_X86_64 = {
    101: "ptrace",
    103: "syslog",
    134: "uselib",
    153: "vhangup",
    155: "pivot_root",
    161: "chroot",
    163: "acct",
    165: "mount",
    166: "umount2",
    167: "swapon",
    168: "swapoff",
    169: "reboot",
    170: "sethostname",
    171: "setdomainname",
    172: "iopl",
    173: "ioperm",
    175: "init_module",
    176: "delete_module",
    179: "quotactl",
    212: "lookup_dcookie",
    246: "kexec_load",
    248: "add_key",
    249: "request_key",
    250: "keyctl",
    272: "unshare",
    298: "perf_event_open",
    303: "name_to_handle_at",
    304: "open_by_handle_at",
    308: "setns",
    310: "process_vm_readv",
    311: "process_vm_writev",
    312: "kcmp",
    313: "finit_module",
    320: "kexec_file_load",
    321: "bpf",
    323: "userfaultfd",
    # SysV IPC and POSIX message queues: nothing user code needs, and their objects outlive
    # the process that made them (a warm worker's next run would find them, and pay for them).
    29: "shmget",
    30: "shmat",
    31: "shmctl",
    64: "semget",
    65: "semop",
    66: "semctl",
    67: "shmdt",
    68: "msgget",
    69: "msgsnd",
    70: "msgrcv",
    71: "msgctl",
    220: "semtimedop",
    240: "mq_open",
    241: "mq_unlink",
    242: "mq_timedsend",
    243: "mq_timedreceive",
    244: "mq_notify",
    245: "mq_getsetattr",
    428: "open_tree",
    429: "move_mount",
    430: "fsopen",
    431: "fsconfig",
    432: "fsmount",
    433: "fspick",
    442: "mount_setattr",
}
# Answered "not implemented": callers (glibc's clone3, libuv's io_uring) fall back by design.
SECCOMP_ENOSYS_X86_64 = {
    425: "io_uring_setup",
    426: "io_uring_enter",
    427: "io_uring_register",
    435: "clone3",
}
SYS_SOCKET = 41
SYS_SOCKETPAIR = 53
SYS_CLONE = 56
CLONE_NAMESPACES = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
AUDIT_ARCH_X86_64 = 0xC000003E
# The socket families user code needs: local sockets, IPv4, IPv6, and route netlink (getaddrinfo
# and getifaddrs read addresses through it). Others (vsock, packet, bluetooth, ...) are refused.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
EAFNOSUPPORT, EPROTONOSUPPORT = 97, 93


# (code, jt, jf, k); a jump target may be the name of a label (a str in the program).
Instruction = tuple[int, int | str, int | str, int]


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _assemble(program: list[Instruction | str]) -> list[tuple[int, int, int, int]]:
    """BPF with named jump targets: a str in the program marks a label, jt/jf may name one."""
    labels: dict[str, int] = {}
    code: list[Instruction] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    resolved = []
    for index, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - index - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - index - 1 if isinstance(jf, str) else jf
        resolved.append((op, jt, jf, k))
    return resolved


def _program() -> _SockFprog | None:
    """The BPF program, built once in the zygote; None where the syscall table is not known."""
    import platform

    if platform.machine() != "x86_64":
        return None
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow = 0x7FFF0000

    def errno(number: int) -> int:
        return 0x00050000 | number

    nr, arg0, arg2 = 0, 16, 32  # offsets in seccomp_data (low halves of the arguments)
    program: list[Instruction | str] = [
        (load, 0, 0, 4),
        (jeq, 1, 0, AUDIT_ARCH_X86_64),
        (ret, 0, 0, errno(1)),  # other ABIs
        (load, 0, 0, nr),
        (jge, "eperm", 0, 0x40000000),  # x32 numbers
    ]
    program += [(jeq, "eperm", 0, number) for number in sorted(SECCOMP_DENY_X86_64)]
    program += [(jeq, "enosys", 0, number) for number in sorted(SECCOMP_ENOSYS_X86_64)]
    program += [
        (jeq, "socket", 0, SYS_SOCKET),
        (jeq, "socketpair", 0, SYS_SOCKETPAIR),
        (jeq, "clone", "allow", SYS_CLONE),
        "socket",
        (load, 0, 0, arg0),
        (jeq, "allow", 0, AF_UNIX),
        (jeq, "allow", 0, AF_INET),
        (jeq, "allow", 0, AF_INET6),
        (jeq, 0, "eafnosupport", AF_NETLINK),
        (load, 0, 0, arg2),
        (jeq, "allow", 0, NETLINK_ROUTE),
        (ret, 0, 0, errno(EPROTONOSUPPORT)),
        "socketpair",
        (load, 0, 0, arg0),
        (jeq, "allow", "eafnosupport", AF_UNIX),
        "clone",
        (load, 0, 0, arg0),  # its flags
        (jset, "eperm", "allow", CLONE_NAMESPACES),
        "allow",
        (ret, 0, 0, allow),
        "eperm",
        (ret, 0, 0, errno(1)),
        "enosys",
        (ret, 0, 0, errno(38)),
        "eafnosupport",
        (ret, 0, 0, errno(EAFNOSUPPORT)),
    ]
    code = _assemble(program)
    filters = (_SockFilter * len(code))(*[_SockFilter(*ins) for ins in code])
    program_struct = _SockFprog(len(code), filters)
    program_struct._keep = filters  # keep the array alive
    return program_struct


SECCOMP_PROGRAM = _program()


def apply() -> None:
    """Install the filter in this process (inherited by whatever it forks or execs)."""
    if SECCOMP_PROGRAM is None:
        return
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    check(
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(SECCOMP_PROGRAM), 0, 0),
        "seccomp",
    )
