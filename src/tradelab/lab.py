"""The lab directory: settings file, generated secrets, rendered configs, state, data.

    lab = Lab.from_flag(None)      # --lab-dir, else $TRADELAB_HOME, else the user data dir
    lab.secret("app_db_password")  # generated once, stored 0600 under secrets/ (0700)
    lab.chaos_file                 # state/chaos.json
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tradelab.errors import TradelabError
from tradelab.files import write_atomic

SECRET_NAMES = (
    "postgres_password",
    "app_db_password",
    "operator_db_password",
    "grafana_admin_password",
)


@dataclass(frozen=True)
class Lab:
    root: Path

    @classmethod
    def from_flag(cls, lab_dir: Path | str | None) -> Lab:
        if lab_dir:
            return cls(Path(lab_dir).expanduser().resolve())
        if os.environ.get("TRADELAB_HOME"):
            return cls(Path(os.environ["TRADELAB_HOME"]).expanduser().resolve())
        import platformdirs

        return cls(Path(platformdirs.user_data_dir("tradelab", appauthor=False)))

    @property
    def config_file(self) -> Path:
        return self.root / "tradelab.yaml"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def rendered_dir(self) -> Path:
        return self.root / "rendered"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def chaos_file(self) -> Path:
        return self.state_dir / "chaos.json"

    @property
    def runtime_file(self) -> Path:
        """The runtime the lab was last brought up on (the orchestrator writes it)."""
        return self.state_dir / "runtime"

    def ensure(self) -> Lab:
        """Create the directories (secrets/ private) if they are missing."""
        try:
            for d in (self.root, self.state_dir):
                d.mkdir(parents=True, exist_ok=True)
            self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.secrets_dir, 0o700)
        except OSError as exc:
            raise TradelabError(
                f"cannot create the lab directory {self.root}: {exc.strerror}; "
                "choose another with --lab-dir or TRADELAB_HOME"
            ) from None
        return self

    def secret_path(self, name: str) -> Path:
        return self.secrets_dir / name

    def secret(self, name: str) -> str:
        """The secret `name`, generated on first use and kept (file mode 0600).

        In a container the secret is a file named by TRADELAB_<NAME>_FILE (tradelab.stack).
        """
        given = os.environ.get(f"TRADELAB_{name.upper()}_FILE")
        if given:
            try:
                return Path(given).read_text().strip()
            except OSError as exc:
                raise TradelabError(f"cannot read secret {name} from {given} "
                                    f"(TRADELAB_{name.upper()}_FILE): {exc.strerror}") from None
        path = self.secret_path(name)
        if path.is_file():
            return path.read_text().strip()
        self.ensure()
        value = secrets.token_urlsafe(24)
        # Written in full to a private temporary file, then linked into place: a
        # concurrent reader never sees a half-written secret, and if another process
        # links first, theirs wins and this one is thrown away.
        tmp = self.secrets_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
        return value

    def write_secret(self, name: str, value: str) -> Path:
        """Store a secret the user gave (e.g. a Slack webhook URL), mode 0600; unchanged
        content is not rewritten."""
        path = self.secret_path(name)
        if path.is_file() and path.read_text().strip() == value:
            return path
        self.ensure()
        write_atomic(path, value + "\n", mode=0o600)
        return path

    def ensure_secrets(self) -> dict[str, Path]:
        """Generate every secret the stack needs; return name -> file."""
        for name in SECRET_NAMES:
            self.secret(name)
        return {name: self.secret_path(name) for name in SECRET_NAMES}
