"""What user code may reach on the network: one network namespace per sandbox slot (preferred)
or, where that cannot be set up, an iptables filter on the sandbox uids in the host's namespace.

Stdlib only (the supervisor runs outside the service's venv). Both need root and iptables.

Namespace per slot (`SlotNetworks`): each slot's processes live in their own network namespace,
joined to the host by a veth pair and NATed out of the host's uplink. They see only their own
sockets and interfaces (/proc/net, netlink), reach public addresses only (never loopback,
private, link-local, other slots, nor any address of the host itself), and nothing can connect
to them. It turns on IPv4 forwarding for the slots' veths and the uplink interfaces.

Owner filter (`OwnerFilter`): packets of the sandbox uids to loopback, private and link-local
ranges and to the host's own addresses are refused, and sandboxes cannot serve connections; but
they share the host's network namespace (its socket table is readable in /proc/net).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import subprocess

from codeactions.runner.host.egress import BLOCKED_V4, BLOCKED_V6
from codeactions.runner.host.linux import CLONE_NEWNET, entered, read_text, write_text

TOOL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
LOCK_DIR = "/run/codeactions"
NETNS_DIR = "/run/netns"
# Slots' addresses: a /24 per runner (claimed with a lock file), a /31 per slot. The benchmark
# range (RFC 2544) is used by no real network, so it collides with no one's.
SLOT_SUBNET = ipaddress.IPv4Network("198.18.0.0/15")
MAX_SLOTS = 128


def run_tool(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=30, env=TOOL_ENV
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return 1, str(exc)
    return done.returncode, (done.stderr or done.stdout).strip()


def find_tool(name: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def nameservers(version: int) -> list[str]:
    found = []
    try:
        with open("/etc/resolv.conf") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        address = ipaddress.ip_address(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    if address.version == version:
                        found.append(str(address))
    except OSError:
        pass
    return found


def hold_lock(name: str, *, shared: bool, wait: bool = True) -> int | None:
    """An flock on /run/codeactions/<name>.lock, held until the fd closes (or we die)."""
    try:
        os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(LOCK_DIR, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(
            fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        )
    except OSError:
        os.close(fd)
        return None
    return fd


def _restore(tool_name: str, lines: list[str]) -> str:
    restore = find_tool(f"{tool_name}-restore")
    if restore is None:
        return f"{tool_name}-restore is not installed"
    code, out = run_tool([restore, "-w", "5", "--noflush"], "\n".join(lines) + "\n")
    return f"{tool_name}: {out}" if code else ""


def _jump(tool: str, table: str, hook: str, chain: str) -> str:
    if run_tool([tool, "-w", "5", "-t", table, "-C", hook, "-j", chain])[0] == 0:
        return ""
    code, out = run_tool([tool, "-w", "5", "-t", table, "-I", hook, "1", "-j", chain])
    return out if code else ""


def _drop_chain(tool: str, table: str, hook: str, chain: str) -> None:
    while run_tool([tool, "-w", "5", "-t", table, "-D", hook, "-j", chain])[0] == 0:
        pass
    run_tool([tool, "-w", "5", "-t", table, "-F", chain])
    run_tool([tool, "-w", "5", "-t", table, "-X", chain])


class OwnerFilter:
    """REJECT what sandbox uids send to loopback, private, link-local and host addresses, and
    DROP what they would answer to connections made to them. Shared by runners with the same
    uid range (the chain is replaced atomically, the last one out removes it)."""

    PREFIX = "CODEACTIONS-"

    def __init__(self, uid_first: int, uid_last: int) -> None:
        self.uids = f"{uid_first}-{uid_last}"
        self.chain = f"{self.PREFIX}{uid_first}-{uid_last}"[:28]
        self.lock: int | None = None

    def install(self) -> str:
        """'' on success, else why not."""
        self.lock = hold_lock(f"egress-{self.uids}", shared=True)
        ipv6 = os.path.exists("/proc/net/if_inet6")
        for tool_name, blocked in (("iptables", BLOCKED_V4), ("ip6tables", BLOCKED_V6)):
            if tool_name == "ip6tables" and not ipv6:
                continue
            tool = find_tool(tool_name)
            if tool is None:
                return f"{tool_name} is not installed"
            reject = (
                "icmp-port-unreachable" if tool_name == "iptables" else "icmp6-port-unreachable"
            )
            owner = f"-A {self.chain} -m owner --uid-owner {self.uids}"
            # Packets of connections made *to* a sandbox travel in the reply direction.
            lines = [
                "*filter",
                f":{self.chain} - [0:0]",
                f"{owner} -m conntrack --ctdir REPLY -j DROP",
            ]
            # The system's resolvers often sit in a private range or on the host itself: DNS to
            # them stays open, or no name would resolve. (A name resolving to a private address
            # is still refused.)
            for server in nameservers(version=4 if tool_name == "iptables" else 6):
                for proto in ("udp", "tcp"):
                    lines.append(f"{owner} -d {server} -p {proto} --dport 53 -j RETURN")
            matches = [f"-d {net}" for net in blocked] + ["-m addrtype --dst-type LOCAL"]
            for match in matches:
                lines.append(f"{owner} {match} -p tcp -j REJECT --reject-with tcp-reset")
                lines.append(f"{owner} {match} -j REJECT --reject-with {reject}")
            lines.append("COMMIT")
            error = _restore(tool_name, lines) or _jump(tool, "filter", "OUTPUT", self.chain)
            if error:
                return f"{tool_name}: {error}"
        return ""

    def remove(self) -> None:
        if self.lock is None:
            return
        # Taking the lock exclusively means no other runner relies on the chain.
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        for tool_name in ("iptables", "ip6tables"):
            tool = find_tool(tool_name)
            if tool is not None:
                _drop_chain(tool, "filter", "OUTPUT", self.chain)


class SlotNetworks:
    """A network namespace per slot, with a veth pair to the host and NAT (see the module)."""

    def __init__(self, count: int) -> None:
        self.tag = str(os.getpid())
        self.count = count
        self.names = [f"ca{self.tag}-{index}" for index in range(count)]
        self.links = [f"c{self.tag}x{index}" for index in range(count)]
        self.chains = {
            ("filter", "FORWARD"): f"CA{self.tag}-FWD",
            ("filter", "INPUT"): f"CA{self.tag}-IN",
            ("filter", "OUTPUT"): f"CA{self.tag}-OUT",
            ("nat", "POSTROUTING"): f"CA{self.tag}-NAT",
        }
        self.block_lock: int | None = None
        self.block: ipaddress.IPv4Network | None = None
        self.installed = False

    def path(self, index: int) -> str:
        return os.path.join(NETNS_DIR, self.names[index])

    def setup(self) -> str:
        """'' on success, else why not (and nothing is left behind)."""
        error = self._setup()
        if error:
            self.remove()
        return error

    def _setup(self) -> str:
        ip, iptables = find_tool("ip"), find_tool("iptables")
        if ip is None or iptables is None:
            return "ip (iproute2) and iptables are needed"
        if self.count > MAX_SLOTS:
            return f"more than {MAX_SLOTS} slots"
        resolvers = nameservers(version=4)
        if any(ipaddress.ip_address(server).is_loopback for server in resolvers):
            return "the DNS resolver listens on the host's loopback, out of a namespace's reach"
        _sweep_stale(ip, iptables)
        if not self._claim_block():
            return "no free address block for the slots"
        assert self.block is not None
        self.installed = True
        mtu = _uplink_mtu()
        hosts = list(self.block)
        lines = []
        for index, (name, link) in enumerate(zip(self.names, self.links, strict=True)):
            lines += [
                f"netns add {name}",
                f"link add {link} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {name}",
                f"addr add {hosts[2 * index]}/31 dev {link}",
                f"link set {link} up",
            ]
        code, out = run_tool([ip, "-batch", "-"], "\n".join(lines) + "\n")
        if code:
            return f"ip: {out}"
        for index, name in enumerate(self.names):
            inside = [
                f"addr add {hosts[2 * index + 1]}/31 dev eth0",
                "link set eth0 up",
                "link set lo up",
                f"route add default via {hosts[2 * index]}",
            ]
            code, out = run_tool([ip, "-n", name, "-batch", "-"], "\n".join(inside) + "\n")
            if code:
                return f"ip -n {name}: {out}"
            with entered(self.path(index), CLONE_NEWNET):
                # No IPv6 inside (no route out), and no TIME_WAIT sockets telling the slot's
                # next run where the previous one connected.
                for key, value in (
                    ("ipv6/conf/all/disable_ipv6", "1"),
                    ("ipv6/conf/default/disable_ipv6", "1"),
                    ("ipv4/tcp_max_tw_buckets", "0"),
                ):
                    with contextlib.suppress(OSError):
                        write_text(f"/proc/sys/net/{key}", value)
        # Forwarding only where it is needed: from the slots out, and back in from the uplinks.
        for link in self.links + _uplinks():
            try:
                write_text(f"/proc/sys/net/ipv4/conf/{link}/forwarding", "1")
            except OSError as exc:  # a container's /proc/sys is read-only
                return f"cannot turn on forwarding for {link}: {exc.strerror or exc}"
        return self._install_rules(iptables, resolvers)

    def _claim_block(self) -> bool:
        for number, block in enumerate(SLOT_SUBNET.subnets(new_prefix=24)):
            lock = hold_lock(f"slot-net-{number}", shared=False, wait=False)
            if lock is not None:
                self.block_lock, self.block = lock, block
                return True
        return False

    def _install_rules(self, iptables: str, resolvers: list[str]) -> str:
        links = f"c{self.tag}x+"
        fwd, inp, out = (self.chains["filter", hook] for hook in ("FORWARD", "INPUT", "OUTPUT"))
        nat = self.chains["nat", "POSTROUTING"]
        lines = ["*filter", f":{fwd} - [0:0]", f":{inp} - [0:0]", f":{out} - [0:0]"]
        for server in resolvers:
            for proto in ("udp", "tcp"):
                lines.append(f"-A {fwd} -i {links} -d {server} -p {proto} --dport 53 -j ACCEPT")
        for net in [*BLOCKED_V4, str(SLOT_SUBNET)]:
            lines.append(f"-A {fwd} -i {links} -d {net} -p tcp -j REJECT --reject-with tcp-reset")
            lines.append(
                f"-A {fwd} -i {links} -d {net} -j REJECT --reject-with icmp-port-unreachable"
            )
        lines += [
            f"-A {fwd} -i {links} -j ACCEPT",
            f"-A {fwd} -o {links} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A {fwd} -o {links} -j DROP",  # nothing from outside connects to a sandbox
            # The host itself (every address it has, its services) is out of reach ...
            f"-A {inp} -i {links} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A {inp} -i {links} -j REJECT --reject-with icmp-port-unreachable",
            # ... and does not connect to sandboxes either.
            f"-A {out} -o {links} -m conntrack --ctstate NEW -j REJECT",
            "COMMIT",
            "*nat",
            f":{nat} - [0:0]",
            f"-A {nat} -s {self.block} ! -d {self.block} -j MASQUERADE",
            "COMMIT",
        ]
        error = _restore("iptables", lines)
        if error:
            return error
        for (table, hook), chain in self.chains.items():
            error = _jump(iptables, table, hook, chain)
            if error:
                return f"iptables: {error}"
        return ""

    def remove(self) -> None:
        if self.installed:
            self.installed = False
            iptables, ip = find_tool("iptables"), find_tool("ip")
            if iptables is not None:
                for (table, hook), chain in self.chains.items():
                    _drop_chain(iptables, table, hook, chain)
            if ip is not None:
                lines = [
                    f"netns del {name}"
                    for name in self.names
                    if os.path.exists(os.path.join(NETNS_DIR, name))
                ]
                if lines:
                    run_tool([ip, "-force", "-batch", "-"], "\n".join(lines) + "\n")
        if self.block_lock is not None:
            os.close(self.block_lock)
            self.block_lock = None


def _sweep_stale(ip: str, iptables: str) -> None:
    """Namespaces and chains of runners that died without removing them."""

    def dead(pid: str) -> bool:
        return not os.path.exists(f"/proc/{pid}")

    with contextlib.suppress(OSError):
        stale = [
            name
            for name in os.listdir(NETNS_DIR)
            if (match := re.fullmatch(r"ca(\d+)-\d+", name)) and dead(match.group(1))
        ]
        if stale:
            run_tool([ip, "-force", "-batch", "-"], "".join(f"netns del {n}\n" for n in stale))
    hooks = {"FWD": "FORWARD", "IN": "INPUT", "OUT": "OUTPUT", "NAT": "POSTROUTING"}
    for table in ("filter", "nat"):
        code, listing = run_tool([iptables, "-w", "5", "-t", table, "-S"])
        if code:
            continue
        for pid, kind in re.findall(r"^-N CA(\d+)-(FWD|IN|OUT|NAT)$", listing, re.MULTILINE):
            if dead(pid):
                _drop_chain(iptables, table, hooks[kind], f"CA{pid}-{kind}")


def _uplinks() -> list[str]:
    """Interfaces of the host's IPv4 default routes."""
    found = []
    with contextlib.suppress(OSError), open("/proc/net/route") as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000" and fields[0] not in found:
                found.append(fields[0])
    return found


def _uplink_mtu() -> int:
    sizes = []
    for link in _uplinks():
        with contextlib.suppress(OSError, ValueError):
            sizes.append(int(read_text(f"/sys/class/net/{link}/mtu")))
    return min(sizes, default=1500)
