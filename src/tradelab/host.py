"""Facts about this machine that every runtime asks: is a port free, is a process alive.

    port_free("127.0.0.1", 8000)        # True when nothing listens there
    pid_alive(4242)                     # False for a zombie too
    parse_bind("127.0.0.1:9101")        # ("127.0.0.1", 9101); ":9101" and "9101" too
    process_tree(4242)                  # [4242, and every process below it]
"""

from __future__ import annotations

import os
import socket

from tradelab.errors import TradelabError

LOOPBACK = "127.0.0.1"


def port_free(address: str, port: int) -> bool:
    """True when nothing listens on address:port ("", "0.0.0.0" and "::": every address)."""
    if address in ("", "0.0.0.0", "::"):
        address = "0.0.0.0"
    address = address.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a killed process not reaped yet is
    dead as far as anyone here cares, and its pid belongs to no one else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OverflowError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc to ask: kill(0) said it exists


def parse_bind(text: str, option: str = "--bind", default_host: str = LOOPBACK,
               example: str = "127.0.0.1:8000") -> tuple[str, int]:
    """("host", port) from "HOST:PORT", ":PORT" or "PORT" (IPv6 as "[::1]:PORT");
    a TradelabError naming `option` when it is anything else."""
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise TradelabError(f"invalid {option} {text!r}: use HOST:PORT, e.g. {example}")
    return host.strip("[]") or default_host, int(port)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents before children (from /proc; [pid] alone
    where there is none). A process tree is not a process group: PostgreSQL's backends
    each lead their own group, so signalling the postmaster's group misses them."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(sorted(children.get(current, ())))
    return tree
