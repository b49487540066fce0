"""The destination ranges user code may not reach (loopback, private, link-local, CGNAT, multicast,
reserved, IPv6 ULA, IPv4-mapped and NAT64 forms...): data only, stdlib only, no side effects, so
the runner host filters with it and the API checks run callbacks against the same list."""

from __future__ import annotations

BLOCKED_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
BLOCKED_V6 = [
    "::1/128",
    "::/128",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "64:ff9b::/96",
]
