"""A PostgreSQL cluster in a directory of our own, run with the real server binaries.

    cluster = PostgresCluster(Path("data/postgres"), port=15432)
    cluster.init(superuser_password="…")   # once; no-op when already initialised
    cluster.start(); cluster.stop()

Used by the local runtime and by the test suite. Binaries come from PATH, then
Debian's /usr/lib/postgresql/*/bin, then the `pgserver` wheel's bundled server.
The server refuses to run as root, so as root it runs as the `postgres` system
user (created if missing), and the data directory belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tradelab.errors import TradelabError


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                    key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if debian:
        return Path(debian[-1]).parent
    try:
        import pgserver  # the embedded server shipped as a wheel

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    except ImportError:
        pass
    raise TradelabError(
        "no PostgreSQL server binaries found: install PostgreSQL (apt-get install "
        "postgresql) or `pip install pgserver`"
    )


class PostgresCluster:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1",
                 bindir: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.bindir = bindir or find_bindir()
        self.socket_dir = self.data_dir.parent / f".{self.data_dir.name}-socket"
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.user = _server_user()

    # -- lifecycle -----------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, superuser_password: str) -> None:
        """initdb with scram auth and a password for `postgres`; no-op if done before."""
        if self.initialised():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.data_dir, self.socket_dir, self.data_dir.parent)
        with self._private_file(superuser_password + "\n") as pwfile:
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres",
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                      "--locale=C", "--no-instructions")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# tradelab\n"
                f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\nfsync = on\nlogging_collector = off\n"
            )

    def start(self, timeout: float = 30) -> None:
        if self.running():
            return
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.socket_dir)
        self.log_file.touch()
        self._own(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(int(timeout)), "-o", f"-p {self.port} -k {self.socket_dir}",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        if not self.initialised():
            return False
        result = subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"],
                                capture_output=True, **self._as_user())
        return result.returncode == 0

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run([str(self.bindir / "pg_isready"), "-h", self.host,
                                "-p", str(self.port)], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise TradelabError(f"PostgreSQL on {self.host}:{self.port} did not become ready; "
                            f"see {self.log_file}")

    def url(self, user: str, password: str, dbname: str = "postgres") -> str:
        from urllib.parse import quote

        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@{self.host}:{self.port}/{dbname}")

    # -- helpers ---------------------------------------------------------------
    def _as_user(self) -> dict:
        return {"user": self.user} if self.user else {}

    def _own(self, *paths: Path) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            for p in paths:
                os.chown(p, entry.pw_uid, entry.pw_gid)

    @contextmanager
    def _private_file(self, content: str) -> Iterator[Path]:
        """A file only the server user can read, for as long as the block runs.

        Made 0600 from the start (O_EXCL, in a fresh 0700 directory), then given to the
        server user: no other local user can read it at any moment, and no file planted
        beforehand can be reused.
        """
        folder = Path(tempfile.mkdtemp(prefix="tradelab-initdb-"))
        path = folder / "pwfile"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
            self._own(folder, path)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bindir / tool), *args], capture_output=True,
                                text=True, cwd="/", **self._as_user())
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise TradelabError(
                f"PostgreSQL {tool} failed: {detail[-1] if detail else 'no output'}"
                f" (log: {self.log_file})"
            )


def _server_user() -> str | None:
    """None when not root; else a system user the server may run as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"
