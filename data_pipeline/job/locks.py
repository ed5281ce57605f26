"""The render workers' work folders, and the locks that tell a live one from a leftover.

Each RenderWorker (data_pipeline.job.worker) owns a work folder WORK/render-XXXX (its render
process's TMPDIR: staged tars, Blender's temporaries, downloaded objects) and holds a flock on
WORK/render-XXXX/.lock for as long as it lives. `remove_stale_work_dirs` deletes the folders whose
owner is gone (a killed job, a dead actor) and never a live one, of this run or another; the job
runs it on the driver's node and every worker on its own node when it warms up. WORK is OUT/work
for a local OUT, else `work_dir` or each node's own <TMPDIR>/imagedream-render (`node_scratch`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

WORK_PREFIX = "render-"  # WORK/render-XXXX, one per RenderWorker
LOCK_FILE = ".lock"  # inside it, flock'ed by its owner for as long as the owner lives


def node_scratch() -> Path:
    """This node's local scratch for render work folders when OUT is not a local folder:
    <TMPDIR>/imagedream-render (each node's own temporary folder)."""
    return Path(tempfile.gettempdir()) / "imagedream-render"


def claim_work_dir(work_dir: Path) -> tuple[Path, int]:
    """A fresh work_dir/render-XXXX locked by this process: (folder, lock fd; close to release).

    Made under a hidden name, locked, then renamed, so a render-* folder is locked from the
    moment it can be seen: `remove_stale_work_dirs` cannot take a live one for a leftover.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    hidden = Path(tempfile.mkdtemp(prefix=f".{WORK_PREFIX}", dir=work_dir))
    fd = os.open(hidden / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: nobody else can hold it
    except OSError as exc:
        os.close(fd)
        shutil.rmtree(hidden, ignore_errors=True)
        raise OSError(
            f"cannot lock a render work folder in {work_dir} ({exc}): the job needs a local file "
            "system with flock for its scratch folders (set work_dir to local disk)"
        ) from exc
    folder = work_dir / hidden.name[1:]
    os.rename(hidden, folder)
    return folder, fd


def remove_stale_work_dirs(work_dir: str | Path, hidden_age_s: float = 3600.0) -> list[Path]:
    """Delete the render-* folders of work_dir whose owner is gone (killed job or actor); a
    folder whose lock is held by a live RenderWorker, of this run or another, is kept. Hidden
    .render-* folders (an owner killed between mkdtemp and rename) go once `hidden_age_s` old.
    Returns the removed folders."""
    work_dir = Path(work_dir)
    removed: list[Path] = []
    if not work_dir.is_dir():
        return removed
    for folder in sorted(work_dir.glob(f"{WORK_PREFIX}*")):
        if folder.is_dir() and _remove_if_ownerless(folder):
            removed.append(folder)
    now = time.time()
    for hidden in work_dir.glob(f".{WORK_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - hidden.stat().st_mtime > hidden_age_s:
                shutil.rmtree(hidden, ignore_errors=True)
                removed.append(hidden)
    return removed


def _remove_if_ownerless(folder: Path) -> bool:
    """Take the folder's lock if its owner is gone, and remove the folder while holding it."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:  # made before locks existed: nobody owns it
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live worker (BlockingIOError), or no flock on this file system
        os.close(fd)
        return False
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)
    return True
