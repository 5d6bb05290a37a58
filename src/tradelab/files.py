"""Writing a file so that a reader sees the old or the new content, never half of it;
and deleting one so that the caller can say what went.

    write_atomic(lab.chaos_file, text)                      # 0644
    write_atomic(lab.secret_path("slack"), url, mode=0o600)  # private from the first byte
    remove_path(lab.state_dir / "logs")                     # "/…/state/logs (9 files)" or None

The temporary file is created next to the target with O_EXCL and mode 0600, under a
name nobody else uses; only then is it given its final mode and renamed into place.
A leftover temporary file (a crash, another user's plant) is never reused, so a
secret is never, even for a moment, readable with a leftover file's mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path


def remove_path(path: Path) -> str | None:
    """Delete a file, a symlink (not what it points to) or a directory tree; return what
    went ("<path> (12 files)", "<path>"), or None when there was nothing there."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
        return str(path)
    if not path.is_dir():
        return None
    files = count_files(path)
    shutil.rmtree(path)
    return f"{path} ({files})"


def count_files(path: Path) -> str:
    """"12 files", "1 file" or "empty": the files under a directory, at any depth."""
    files = sum(len(names) for _, _, names in os.walk(path))
    return f"{files} file{'' if files == 1 else 's'}" if files else "empty"


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename (fsynced); the file ends with `mode`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue  # someone holds that name: take another, never theirs
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)  # exactly `mode`, whatever the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
