"""supervisord for the local runtime: its config, the daemon and its XML-RPC API.

    sup = Supervisor(lab.state_dir / "local", logs_dir=lab.state_dir / "logs")
    sup.write_config([Program("api", ["tradelab", "serve", "api"])])
    sup.start_daemon()              # daemonised; returns once its socket answers
    sup.rpc.startProcess("api")     # the `supervisor.*` XML-RPC namespace
    sup.shutdown()                  # stops every program, waits for supervisord to exit

The config is generated with configparser (no template): every value comes from a
Program, so nothing here re-declares a port or a command. Control goes over a unix
socket (mode 0700) in the lab's state directory, never over the network.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from tradelab.errors import TradelabError
from tradelab.files import write_atomic
from tradelab.host import pid_alive

# Linux limits a unix socket path to 108 bytes; deeper labs use a short path in /tmp.
_MAX_SOCKET_PATH = 100


@dataclass
class Program:
    """One supervised process."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (root only); postgres refuses root
    directory: str | None = None
    oneshot: bool = False  # runs once to completion (migrate); never restarted
    priority: int = 50  # lower starts first and stops last
    stopsignal: str = "TERM"
    stopwaitsecs: int = 20
    numprocs: int = 1  # replicas (locust workers): processes NAME-0 .. NAME-(n-1)


class Supervisor:
    def __init__(self, conf_dir: Path, logs_dir: Path, identifier: str = "tradelab") -> None:
        self.conf_dir = Path(conf_dir)
        self.logs_dir = Path(logs_dir)
        self.identifier = identifier
        self.conf_file = self.conf_dir / "supervisord.conf"
        self.pid_file = self.conf_dir / "supervisord.pid"
        self.socket = self._socket_path()
        self._rpc: xmlrpc.client.ServerProxy | None = None

    def log_file(self, program: str, replica: int | None = None) -> Path:
        return self.logs_dir / (f"{program}.log" if replica is None
                                else f"{program}-{replica}.log")

    def log_files(self, program: str) -> list[Path]:
        """The program's log file, or one per replica when it runs several."""
        single = self.log_file(program)
        replicas = sorted(self.logs_dir.glob(f"{program}-[0-9]*.log"),
                          key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if single.exists() and (not replicas or single.stat().st_mtime >= max(
                r.stat().st_mtime for r in replicas)):
            return [single]
        return replicas

    # -- config ----------------------------------------------------------------------
    def render_config(self, programs: list[Program]) -> str:
        """supervisord.conf for `programs`: every program starts only when asked."""
        conf = configparser.RawConfigParser()
        conf.optionxform = str  # type: ignore[assignment,method-assign]  # keep names as written
        conf["unix_http_server"] = {"file": _q(self.socket), "chmod": "0700"}
        conf["supervisord"] = {
            "logfile": _q(self.logs_dir / "supervisord.log"),
            "logfile_maxbytes": "5MB",
            "logfile_backups": "1",
            "pidfile": _q(self.pid_file),
            "identifier": self.identifier,
            "directory": _q(self.conf_dir),
            "childlogdir": _q(self.logs_dir),
            "minfds": "1024",
        }
        conf["rpcinterface:supervisor"] = {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
        }
        conf["supervisorctl"] = {"serverurl": _q(f"unix://{self.socket}")}
        for p in programs:
            section = {
                "command": _q(shlex.join(p.command)),
                "autostart": "false",  # `up` starts them in dependency order
                "autorestart": "false" if p.oneshot else "true",
                "startsecs": "0" if p.oneshot else "1",
                "startretries": "10",
                "exitcodes": "0",
                "priority": str(p.priority),
                "stopsignal": p.stopsignal,
                "stopwaitsecs": str(p.stopwaitsecs),
                # Escalation to SIGKILL takes the whole process group (gunicorn workers).
                "killasgroup": "true",
                "redirect_stderr": "true",
                "stdout_logfile": _q(self.log_file(p.name)) if p.numprocs == 1
                else _q(self.logs_dir) + f"/{p.name}-%(process_num)d.log",
                "stdout_logfile_maxbytes": "10MB",
                "stdout_logfile_backups": "2",
            }
            if p.numprocs > 1:
                section["numprocs"] = str(p.numprocs)
                section["process_name"] = "%(program_name)s-%(process_num)d"
            if p.user:
                section["user"] = p.user
            if p.directory:
                section["directory"] = _q(p.directory)
            if p.env:
                section["environment"] = ",".join(
                    f'{k}="{_q(v)}"' for k, v in sorted(p.env.items()))
            conf[f"program:{p.name}"] = section
        out = io.StringIO()
        conf.write(out)
        return out.getvalue()

    def write_config(self, programs: list[Program]) -> bool:
        """Write the config (0600: it holds database passwords); True when it changed."""
        text = self.render_config(programs)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        old = self.conf_file.read_text() if self.conf_file.is_file() else None
        if old == text:
            return False
        write_atomic(self.conf_file, text, mode=0o600)
        return True

    # -- daemon ----------------------------------------------------------------------
    def recorded_pid(self) -> int | None:
        """The pid in supervisord's pid file, alive or not (a killed daemon leaves it)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """supervisord's pid while it runs."""
        pid = self.recorded_pid()
        return pid if pid is not None and pid_alive(pid) else None

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def start_daemon(self, timeout: float = 20) -> None:
        if self.running():
            return
        self.socket.unlink(missing_ok=True)  # left by a supervisord that was killed
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf_file)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise TradelabError(f"supervisord did not start: {detail[-1] if detail else '?'} "
                                f"(log: {self.logs_dir / 'supervisord.log'})")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.1)
        raise TradelabError(f"supervisord did not answer on {self.socket} within {timeout:.0f}s "
                            f"(log: {self.logs_dir / 'supervisord.log'})")

    def shutdown(self, timeout: float = 60) -> None:
        """Stop every program (reverse priority), then supervisord; wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            self.rpc.shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(pid, 15)  # the socket is gone but the daemon lives: SIGTERM does the same
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise TradelabError(f"supervisord (pid {pid}) did not stop within "
                                    f"{timeout:.0f}s; see {self.logs_dir / 'supervisord.log'}")
            time.sleep(0.1)
        self._rpc = None

    @property
    def rpc(self):
        """The `supervisor` XML-RPC namespace over the unix socket."""
        if self._rpc is None:
            from supervisor.xmlrpc import SupervisorTransport

            transport = SupervisorTransport(None, None, f"unix://{self.socket}")
            self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return self._rpc.supervisor

    def process_info(self) -> dict[str, dict]:
        """program -> getProcessInfo dict ({} when supervisord is not running).

        A program with replicas is summed up in one dict: RUNNING only when every
        replica runs, and `pids` lists them all (`pid` is the first)."""
        if self.pid() is None:
            return {}
        try:
            infos = self.rpc.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return {}
        programs: dict[str, dict] = {}
        for info in infos:
            group = programs.get(info["group"])
            if group is None:
                programs[info["group"]] = {**info, "name": info["group"],
                                           "pids": [info["pid"]] if info["pid"] else []}
                continue
            if info["pid"]:
                group["pids"].append(info["pid"])
                group["start"] = min(group.get("start") or info["start"], info["start"])
            if group["statename"] == "RUNNING" and info["statename"] != "RUNNING":
                group.update(statename=info["statename"], exitstatus=info["exitstatus"])
        return programs

    def apply_config(self) -> list[str]:
        """Make a running supervisord follow a rewritten config; return programs replaced."""
        added, changed, removed = self.rpc.reloadConfig()[0]
        for name in changed + removed:
            self.rpc.stopProcessGroup(name, True)  # every replica; no-op when stopped
            self.rpc.removeProcessGroup(name)
        for name in added + changed:
            self.rpc.addProcessGroup(name)
        return sorted(changed + added)

    def _socket_path(self) -> Path:
        path = self.conf_dir / "supervisor.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.conf_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"tradelab-{digest}.sock"


def _q(value: object) -> str:
    """A value for supervisord's config, which expands %(name)s in every value."""
    return str(value).replace("%", "%%")
