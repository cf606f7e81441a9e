"""Temporary files and folders coach makes beside what it writes, and their cleanup.

Everything a render writes is made under a hidden temporary name in the target's own
folder and renamed into place when complete. One naming serves them all,
``.TARGET.coach-PID-RANDOM.tmp``, where PID is the writing process: so a later render in
the folder can tell its own leftovers (from a process killed outright) from anything
else, and from the temporaries of a render still under way. ``sweep`` removes the stale
ones: those whose process is gone, or (for names of older coach versions, which carry no
process) that are over a minute old. Nothing that does not match the naming is touched.

Files are made with mode 0666 and folders 0777, less the umask, like any new file, so a
finished output has ordinary permissions.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from coach.errors import CoachError

#: A temporary of an older coach (no process in its name) is stale after this long.
STALE_SECONDS = 60.0

_OURS = re.compile(r"\..+\.coach-(\d+)-[A-Za-z0-9]+\.tmp")
# What coach 0.1 named them: .OUT.coach-HEX.tmp, .NAME.vtt.RANDOM.coach-tmp, the split's
# .FOLDER.RANDOM.coach-tmp and .FOLDER.coach-old.
_OLDER = re.compile(
    r"\..+\.coach-[0-9a-f]{8}\.tmp|\..+\.[A-Za-z0-9_]{8}\.coach-tmp|\..+\.coach-old"
)


def name_for(target: Path) -> Path:
    """A fresh temporary name beside `target` (nothing is created)."""
    return target.with_name(f".{target.name}.coach-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def new_file(target: Path) -> Path:
    """Create an empty temporary file beside `target` and return its path."""
    for _ in range(100):
        tmp = name_for(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise CoachError(f"cannot write {target}: {e.strerror or e}") from e
        os.close(fd)
        return tmp
    raise CoachError(f"cannot write {target}: no free temporary file name")


def new_folder(target: Path) -> Path:
    """Create an empty temporary folder beside `target` and return its path."""
    for _ in range(100):
        tmp = name_for(target)
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        except OSError as e:
            raise CoachError(f"cannot write {target}: {e.strerror or e}") from e
        return tmp
    raise CoachError(f"cannot write {target}: no free temporary folder name")


def remove(path: Path) -> None:
    """Remove a temporary file or folder; gone already is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether `path` is a temporary of coach's that no render will finish."""
    match = _OURS.fullmatch(path.name)
    if match and os.name == "posix":
        pid = int(match.group(1))
        return pid != os.getpid() and not running(pid)
    if match or _OLDER.fullmatch(path.name):
        try:
            age = (time.time() if now is None else now) - path.lstat().st_mtime
        except OSError:
            return False
        # Where a process cannot be asked about, only an hour without change tells.
        return age > (STALE_SECONDS if not match else 60 * STALE_SECONDS)
    return False


def sweep(folder: Path) -> list[Path]:
    """Remove coach's stale temporaries in `folder`; returns what was removed. Best
    effort: a folder that cannot be listed, or a file that cannot go, is left alone."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if path.name.startswith(".") and is_stale(path):
            remove(path)
            removed.append(path)
    return removed


def running(pid: int) -> bool:
    """Whether a process of this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, and belongs to someone else
    return True


def fsync_dir(folder: Path) -> None:
    """Make a link or rename in `folder` durable; best effort (not every OS or file
    system lets a folder be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
