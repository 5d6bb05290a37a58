"""Where the local runtime keeps its embedded PostgreSQL cluster, and how it is run.

    data_dir = postgres_data_dir(lab)      # <lab>/data/postgres, or where its link points
    cluster = PostgresCluster(data_dir, port=settings.ports.postgres)
    program = postgres_program(cluster)    # the server in the foreground, for supervisord

As root, the server runs as the `postgres` user, which must be able to reach its
data directory. A lab under /root (mode 0700, the default platformdirs location
for root) is out of its reach, and tradelab does not loosen /root's permissions.
Such a lab keeps its cluster under /var/lib/tradelab/<lab-id>/postgres instead, and
<lab>/data/postgres is a symlink to it, so the data still "lives" where the lab
says and `down --volumes` removes both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tradelab.db.cluster import PostgresCluster, find_bindir
from tradelab.runtimes.supervisor import Program

if TYPE_CHECKING:
    from tradelab.lab import Lab

OUTSIDE_ROOT = Path("/var/lib/tradelab")


def postgres_data_dir(lab: Lab, create: bool = False) -> Path:
    """The cluster's real data directory; with `create`, make the link that records it."""
    link = lab.data_dir / "postgres"
    if link.is_symlink():
        return Path(os.readlink(link))
    if os.geteuid() != 0 or link.is_dir() or _reachable_by("postgres", _existing(lab.data_dir)):
        return link
    outside = OUTSIDE_ROOT / lab_id(lab) / "postgres"
    if create:
        outside.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(OUTSIDE_ROOT, 0o755)
        # Who owns this directory, for a person looking at /var/lib/tradelab.
        (outside.parent / "LAB").write_text(f"{lab.root}\n")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside)
    return outside


def server_bindir(bindir: Path | None = None, create: bool = False) -> Path:
    """The server binaries, where the `postgres` user can run them.

    The `pgserver` wheel's bundled server sits in root's site-packages, under a 0700
    /root when root installed it: then a copy in /var/lib/tradelab (made once, with
    `create`) is what runs."""
    bindir = bindir or find_bindir()
    if os.geteuid() != 0 or _reachable_by("postgres", bindir / "postgres"):
        return bindir
    digest = hashlib.sha256(str(bindir).encode()).hexdigest()[:10]
    copy = OUTSIDE_ROOT / f"pginstall-{digest}"
    if create and not (copy / "bin" / "postgres").exists():
        OUTSIDE_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(OUTSIDE_ROOT, 0o755)
        tmp = OUTSIDE_ROOT / f".pginstall-{digest}.{os.getpid()}"
        shutil.copytree(bindir.parent, tmp, symlinks=True,
                        ignore=shutil.ignore_patterns("include"))
        os.chmod(tmp, 0o755)
        tmp.rename(copy)
    return copy / "bin"


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (what decides reachability)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def remove_postgres_data(lab: Lab) -> None:
    """Delete the cluster (and the directory outside the lab, if it has one)."""
    link = lab.data_dir / "postgres"
    if link.is_symlink():
        outside = Path(os.readlink(link))
        link.unlink()
        if outside.parent.parent == OUTSIDE_ROOT:
            shutil.rmtree(outside.parent, ignore_errors=True)
        return
    shutil.rmtree(link, ignore_errors=True)
    for leftover in (link.parent / ".postgres-socket", link.parent / "postgres.log"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def lab_id(lab: Lab) -> str:
    digest = hashlib.sha256(str(lab.root).encode()).hexdigest()[:10]
    return f"{lab.root.name}-{digest}"


def postgres_program(cluster: PostgresCluster, host: str = "127.0.0.1") -> Program:
    """The postmaster in the foreground; port and address on the command line win over
    postgresql.conf, so a changed ports.postgres takes effect on the next start."""
    return Program(
        name="postgres",
        command=[str(cluster.bindir / "postgres"), "-D", str(cluster.data_dir),
                 "-p", str(cluster.port), "-k", str(cluster.socket_dir),
                 "-c", f"listen_addresses={host}"],
        user=cluster.user,
        directory=str(cluster.data_dir.parent),
        priority=10,
        stopsignal="INT",  # PostgreSQL's "fast" shutdown: roll back, then exit cleanly
        stopwaitsecs=60,
    )


def prepare(cluster: PostgresCluster, superuser_password: str) -> None:
    """initdb on first use; make the socket directory the server writes its socket to."""
    cluster.init(superuser_password)
    cluster.socket_dir.mkdir(parents=True, exist_ok=True)
    cluster._own(cluster.socket_dir)


def ensure_database(url: str, name: str) -> bool:
    """CREATE DATABASE `name` unless it exists; True when it was created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _reachable_by(user: str, directory: Path) -> bool:
    """True when `user` can enter `directory` (every parent must let it through)."""
    result = subprocess.run(["test", "-x", str(directory)], user=user, cwd="/",
                            capture_output=True)
    return result.returncode == 0
