"""One live job per output folder: the exclusive lease a job takes before it changes anything in
its folder (a training run folder, a render job's or an evaluation's output folder).

    with folder_lease(out, "render job") as lease:
        ...  # a second job on `out` stops at once with FolderBusy naming this one

- A local folder (a `file://` URL too): an OS lock, `flock` on `FOLDER/.lease`, which also works
  on shared POSIX file systems that support it (NFS emulates it with POSIX locks; Lustre needs
  its `flock` mount option; a file system without locks is an OSError saying so). The kernel
  drops the lock when its holder dies, so a killed job's next run resumes at once. While held,
  the file names the owner (host, pid, start time); the release empties it.
- Object storage: a lease object `FOLDER/.lease.json` naming the owner and an expiry, written
  with the store's conditional put (S3: `If-None-Match: *` to create, `If-Match: <ETag>` to
  renew or take over), renewed by a thread of the live job every third of its time to live. A
  lease past its expiry is taken over; so is one whose owner is a process of this host that no
  longer exists, without waiting. Where the store has no conditional put (anything but S3 here),
  the same steps run as check-then-write: two jobs started in the same instant may both win.
  A renewal that finds the lease taken over marks it `lost` and logs an error.

Owners are compared by a random nonce, so a retried conditional write whose first attempt did
land is recognised as our own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract import storage

log = logging.getLogger(__name__)

LOCAL_FILE = ".lease"
REMOTE_FILE = ".lease.json"
DEFAULT_TTL_S = 120.0


class FolderBusy(RuntimeError):
    """Another live job holds the folder's lease."""


@dataclass(frozen=True)
class Owner:
    what: str  # "training run", "render job", "evaluation"
    host: str
    pid: int
    started: str  # ISO time, UTC
    nonce: str
    expires: float = 0.0  # unix time; object-store leases only

    @classmethod
    def me(cls, what: str, ttl_s: float = 0.0) -> Owner:
        return cls(
            what=what,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            nonce=secrets.token_hex(8),
            expires=time.time() + ttl_s if ttl_s else 0.0,
        )

    @classmethod
    def parse(cls, data: bytes) -> Owner | None:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None  # empty (released, or being written) or not ours

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    def describe(self) -> str:
        return f"{self.what} (pid {self.pid} on {self.host}, started {self.started})"

    def is_dead_here(self) -> bool:
        """A process of this host that no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


def _busy(folder: storage.PathLike, owner: Owner | None, extra: str = "") -> FolderBusy:
    who = f"another {owner.describe()}" if owner is not None else "another job"
    return FolderBusy(
        f"{folder} is in use by {who}{extra}. Only one job may write a folder at a time: wait "
        "for that one to finish or stop it, or give this one another folder."
    )


class FolderLease:
    """A held lease; `release()` (or leaving `folder_lease`) gives it up."""

    def __init__(self, folder: storage.PathLike, owner: Owner) -> None:
        self.folder = folder
        self.owner = owner
        self.lost = False

    def release(self) -> None:
        raise NotImplementedError


class _LocalLease(FolderLease):
    def __init__(self, folder: Path, what: str) -> None:
        super().__init__(folder, Owner.me(what))
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCAL_FILE
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Owner.parse(self.path.read_bytes())
            os.close(self.fd)
            extra = ""
            if holder is not None and holder.is_dead_here():
                extra = " (that process is gone; a child it forked still holds the lock and ends within seconds: try again)"
            raise _busy(folder, holder, extra) from None
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(
                    f"{self.path}: this file system does not support file locks (flock), which "
                    "keep two jobs out of one folder; use a folder on one that does"
                ) from exc
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, self.owner.to_bytes(), 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # a folder at rest holds an empty lease file
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


class _RemoteLease(FolderLease):
    def __init__(self, folder: str, what: str, ttl_s: float) -> None:
        super().__init__(folder, Owner.me(what, ttl_s))
        self.ttl_s = ttl_s
        self.fs, self.path = storage._fs(storage.join(folder, REMOTE_FILE))
        self.conditional = "s3" in _protocols(self.fs)
        self.etag = self._take()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()

    # -- the store

    def _put(self, owner: Owner, create: bool = False, if_match: str | None = None) -> str | None:
        """Write the lease object; its new ETag (None where the store gives none). Raises
        FileExistsError / _Conflict when the condition fails."""
        data = owner.to_bytes()
        kwargs: dict[str, Any] = {}
        if self.conditional and if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            if create and self.conditional:
                out = self.fs.pipe_file(self.path, data, mode="create")
            elif create:
                if self.fs.exists(self.path):
                    raise FileExistsError(self.path)
                out = self.fs.pipe_file(self.path, data)
            else:
                out = self.fs.pipe_file(self.path, data, **kwargs)
        except FileExistsError:
            raise
        except OSError as exc:
            if if_match is not None and exc.errno == errno.EINVAL:  # s3fs: 412 PreconditionFailed
                raise _Conflict(str(exc)) from exc
            raise
        return out.get("ETag") if isinstance(out, dict) else None

    def _read(self) -> tuple[Owner | None, str | None]:
        self.fs.invalidate_cache(self.path)
        info = self.fs.info(self.path)
        return Owner.parse(self.fs.cat_file(self.path)), info.get("ETag")

    def _take(self) -> str | None:
        for _ in range(5):  # each pass: create, or read and take over; a race lost: again
            try:
                return self._put(self.owner, create=True)
            except FileExistsError:
                pass
            try:
                holder, etag = self._read()
            except FileNotFoundError:
                continue  # released in between
            if holder is not None and holder.nonce == self.owner.nonce:
                return etag  # our own create, retried after it landed
            if holder is not None and not (holder.expires < time.time() or holder.is_dead_here()):
                left = holder.expires - time.time()
                raise _busy(self.folder, holder, f", its lease renewed until {left:.0f} s from now")
            if holder is not None:
                log.warning(
                    "%s: taking over the lease of %s (expired or gone)",
                    self.folder,
                    holder.describe(),
                )
            try:
                if not self.conditional:
                    current, _ = self._read()
                    if current != holder:
                        continue
                return self._put(self.owner, if_match=etag)
            except (_Conflict, FileNotFoundError):
                continue
        raise _busy(self.folder, None, " (its lease changed hands while this job tried to take it)")

    # -- renewal

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            owner = Owner(**{**asdict(self.owner), "expires": time.time() + self.ttl_s})
            try:
                if not self.conditional:
                    holder, _ = self._read()
                    if holder is None or holder.nonce != self.owner.nonce:
                        raise _Conflict("the lease names another owner")
                self.etag = self._put(owner, if_match=self.etag)
                self.owner = owner
            except (_Conflict, FileNotFoundError) as exc:
                self.lost = True
                log.error(
                    "%s: this job lost its lease (%s); another job may be writing here",
                    self.folder,
                    exc,
                )
                return
            except OSError as exc:  # the store is unreachable for now: the next tick tries again
                if time.time() > self.owner.expires:
                    self.lost = True
                    log.error(
                        "%s: the lease expired while the store was unreachable (%s)",
                        self.folder,
                        exc,
                    )
                    return
                log.warning("%s: renewing the lease failed (%s); trying again", self.folder, exc)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        with contextlib.suppress(OSError):
            holder, _ = self._read()
            if holder is not None and holder.nonce == self.owner.nonce:
                self.fs.rm(self.path)


class _Conflict(Exception):
    """A conditional write found the lease changed."""


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def acquire(folder: storage.PathLike, what: str, ttl_s: float = DEFAULT_TTL_S) -> FolderLease:
    """Take the folder's lease for a job described as `what`, or raise FolderBusy naming the
    live owner. `ttl_s`: how long an object-store lease outlives its last renewal."""
    where = storage.resolve(folder)
    if isinstance(where, Path):
        return _LocalLease(where, what)
    return _RemoteLease(where, what, ttl_s)


@contextlib.contextmanager
def folder_lease(
    folder: storage.PathLike, what: str, ttl_s: float = DEFAULT_TTL_S
) -> Iterator[FolderLease]:
    lease = acquire(folder, what, ttl_s)
    try:
        yield lease
    finally:
        lease.release()
