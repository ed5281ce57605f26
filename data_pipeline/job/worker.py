"""Rendering one object under a hard time limit, with bounded retries. No Ray in here.

Two halves:
- the render process (`python -m data_pipeline.job.worker`): a long-lived child that imports Blender
  once, then renders one request at a time, validates every ring and writes the object's samples
  as one tar. It answers on a private pipe, one JSON line per request (the typed messages of
  data_pipeline.render.protocol); Blender's own chatter goes to the log file, never into the
  protocol.
- `RenderWorker`, the parent side: fetches the asset, sends the request, and waits at most
  `time_limit_s`. A child that overruns is killed (its whole process group) -> Reason.TIMEOUT; a
  child that dies -> Reason.WORKER_CRASHED with the exit status and the log tail; either way a fresh
  child is started for the next request. Transient reasons (errors.TRANSIENT) are retried up to
  `max_attempts`; the result is always an `ObjectResult`, never an exception.

Each `RenderWorker` owns a work folder WORK/render-XXXX (the render process's TMPDIR: staged
tars, Blender's temporaries, downloaded objects) and holds a lock on it while alive;
`remove_stale_work_dirs` deletes the folders whose owner is gone (a killed job, a dead actor) and
never a live one; each worker runs it on its node when it warms up. WORK is OUT/work for a local
OUT, else (OUT in object storage) `work_dir` or each node's own <TMPDIR>/imagedream-render; the
logs are in WORK/logs.

The job wraps `RenderWorker` in a Ray actor (job.py); tests drive it directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.atomic import atomic_write_bytes
from contract.schema import encode_sample
from contract.shard_writer import tar_bytes
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.protocol import ProtocolError, Ready, RenderAnswer, RenderRequest
from data_pipeline.sources.base import ObjectSpec, Source

DEFAULT_RENDERER = "data_pipeline.render.blender:render_object"
# Called once when a render process starts, before its "ready": BlenderProc's start-up (bpy
# import, scene init) then counts as start-up, not as the first object's render time or limit.
WARM_UP = {DEFAULT_RENDERER: "data_pipeline.render.blenderproc_env:ensure_blenderproc"}
STARTUP_TIMEOUT_S = 300.0  # importing bpy on a cold disk can take a while; not an object's fault
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
WORK_PREFIX = "render-"  # OUT/work/render-XXXX, one per RenderWorker
LOCK_FILE = ".lock"  # inside it, flock'ed by its owner for as long as the owner lives
FETCH_DIR = "fetch"  # inside it: the object being rendered, when the source downloads it


@dataclass
class ObjectResult:
    """What happened to one object. `staged` holds the object's tar bytes when it rendered."""

    uid: str
    path: str
    attempts: int
    staged: bytes | None = None
    reason: str | None = None  # errors.Reason value when refused
    detail: str = ""
    rings: int = 0
    blender_seconds: float = 0.0  # sum over rings, as reported by the renderer
    wall_seconds: float = 0.0  # fetch + all attempts, in the worker
    history: list[str] = field(default_factory=list)  # "attempt 1: timeout: ..." per failure
    notes: list[str] = field(default_factory=list)  # RingMeta.notes of its rings (distinct)
    rings_with_notes: int = 0
    # True when the failure was not a Refusal (an error in the environment, the config or our
    # code, not a property of the asset): the job reports it but does not quarantine the object.
    unexpected: bool = False

    @property
    def ok(self) -> bool:
        return self.staged is not None


class UnexpectedRenderError(RuntimeError):
    """The renderer raised something other than a Refusal (see render.render_object)."""


# -- parent side --------------------------------------------------------------------------------


class RenderProcess:
    """One child render process; restarted after a timeout, a crash or `recycle_after` objects.

    With `tmp_dir`, the child's TMPDIR is that folder (its temporaries then live in the worker's
    work folder) and whatever a killed child left there is removed when it is replaced.
    """

    def __init__(
        self,
        renderer: str,
        log_path: str | Path,
        recycle_after: int = 100,
        tmp_dir: str | Path | None = None,
    ):
        self.renderer = renderer
        self.log_path = Path(log_path)
        self.recycle_after = recycle_after
        self.tmp_dir = None if tmp_dir is None else Path(tmp_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.served = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_REPO_ROOT, env.get("PYTHONPATH")] if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.tmp_dir is not None:
            env["TMPDIR"] = str(self.tmp_dir)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "data_pipeline.job.worker", "--renderer", self.renderer],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,  # own process group: a timeout kills Blender's helpers too
            )
        self.proc, self.served = proc, 0
        line = self._read_line(STARTUP_TIMEOUT_S)
        try:
            started = bool(line) and Ready.from_line(line or b"").ready
        except ProtocolError:
            started = False
        if not started:
            status = self.kill()
            raise Refusal(
                Reason.WORKER_CRASHED,
                self.renderer,
                f"render process did not start (exit {status}): {self.log_tail()}",
            )
        return proc

    def _read_line(self, timeout: float) -> bytes | None:
        """One protocol line; b"" at EOF (the child is gone); None on timeout."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            return None
        return self.proc.stdout.readline()

    def kill(self) -> int | None:
        """Kill the child's whole process group; returns its exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if self.tmp_dir is not None:  # a killed Blender's half-written frames and tars
            _empty_dir(self.tmp_dir, keep={LOCK_FILE, FETCH_DIR})  # the next object's asset stays
        return status

    def log_tail(self, chars: int = 800) -> str:
        try:
            text = self.log_path.read_bytes()[-chars:].decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-chars:]

    def request(self, request: RenderRequest, timeout: float, name: str) -> RenderAnswer:
        """Send one request and wait for its answer; raises Refusal(TIMEOUT/WORKER_CRASHED)."""
        if self.proc is None or self.proc.poll() is not None or self.served >= self.recycle_after:
            self.kill()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(request.to_line())
            self.proc.stdin.flush()
        except BrokenPipeError:
            status = self.kill()
            raise Refusal(
                Reason.WORKER_CRASHED, name, f"render process gone (exit {status})"
            ) from None
        line = self._read_line(timeout)
        if line is None:
            self.kill()
            raise Refusal(Reason.TIMEOUT, name, f"render exceeded {timeout:g} s; killed")
        if not line:
            status = self.kill()
            raise Refusal(
                Reason.WORKER_CRASHED,
                name,
                f"render process died (exit {status}): {self.log_tail()}",
            )
        self.served += 1
        answer = RenderAnswer.from_line(line)
        if answer.unexpected:
            self.kill()  # its Blender state is suspect: the next object gets a fresh process
        return answer


class RenderWorker:
    """Fetch, render under a time limit, retry transient failures; Ray-free."""

    def __init__(
        self,
        source: Source,
        settings: Any,
        *,
        time_limit_s: float,
        max_attempts: int,
        work_dir: str | Path | None,
        renderer: str = DEFAULT_RENDERER,
        recycle_after: int = 100,
    ):
        self.source = source
        self.settings = settings
        self.time_limit_s = time_limit_s
        self.max_attempts = max_attempts
        # None: this node's own scratch (the job's output is in object storage)
        self.work_dir = Path(work_dir) if work_dir is not None else node_scratch()
        self.tmp: Path
        self._lock: int | None
        self.tmp, self._lock = claim_work_dir(self.work_dir)
        suffix = self.tmp.name.removeprefix(WORK_PREFIX)
        log = self.work_dir / "logs" / f"render-{os.getpid()}-{suffix}.log"
        self.process = RenderProcess(renderer, log, recycle_after, tmp_dir=self.tmp)

    def warm_up(self) -> None:
        """Start the render process now, so Blender's import is not charged to the first object;
        and remove what killed runs left in this node's work folder (the job does so only on the
        driver's node)."""
        remove_stale_work_dirs(self.work_dir)
        if self.process.proc is None:
            try:
                self.process._start()
            except Refusal as exc:  # no object is at fault: the environment is
                raise RuntimeError(exc.detail) from None

    def close(self) -> None:
        """Stop the render process and remove temporaries (the log stays, for post-mortems)."""
        self.process.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def process_object(self, spec: ObjectSpec) -> ObjectResult:
        start = time.monotonic()
        result = ObjectResult(uid=spec.uid, path=spec.path, attempts=0)
        while result.attempts < self.max_attempts:
            result.attempts += 1
            try:
                self._attempt(spec, result)
                result.reason, result.detail, result.unexpected = None, "", False
                break
            except Refusal as refusal:
                result.reason, result.detail = refusal.reason.value, refusal.detail
                result.unexpected = False
                result.history.append(f"attempt {result.attempts}: {refusal}")
                if not refusal.transient:
                    break
            except Exception as exc:  # not the asset's fault: retried in a fresh process
                result.reason, result.detail = Reason.RENDER_ERROR.value, str(exc) or repr(exc)
                result.unexpected = True
                result.history.append(f"attempt {result.attempts}: unexpected: {exc!r}")
        result.wall_seconds = time.monotonic() - start
        return result

    def _attempt(self, spec: ObjectSpec, result: ObjectResult) -> None:
        scratch = self.tmp / FETCH_DIR
        try:
            self._render(spec, result, self.source.fetch(spec, scratch=scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _render(self, spec: ObjectSpec, result: ObjectResult, asset: Path) -> None:
        out = self.tmp / f"{spec.uid}.tar"
        request = RenderRequest(
            uid=spec.uid,
            asset_path=str(asset),
            caption=spec.caption,
            source=spec.source,
            sha256=spec.sha256,
            settings=_settings_dict(self.settings),
            out=str(out),
        )
        answer = self.process.request(request, self.time_limit_s, spec.path)
        if answer.unexpected:
            raise UnexpectedRenderError(answer.detail or "?")
        if not answer.ok:
            raise Refusal(Reason(answer.reason or Reason.RENDER_ERROR), spec.path, answer.detail)
        result.staged = out.read_bytes()
        out.unlink()
        result.rings = answer.rings
        result.blender_seconds = answer.blender_seconds
        result.notes = list(answer.notes)
        result.rings_with_notes = answer.rings_with_notes


# -- work folders -------------------------------------------------------------------------------


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


def _empty_dir(folder: Path, keep: set[str]) -> None:
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _settings_dict(settings: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return dataclasses.asdict(settings)
    return dict(settings)


# -- child side ---------------------------------------------------------------------------------


def _load(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _build_settings(raw: dict[str, Any]) -> Any:
    from data_pipeline.render.settings import RenderSettings

    return RenderSettings(**raw)  # JSON lists stand in for tuples; __post_init__ accepts both


def render_to_tar(renderer: Callable[..., Any], request: RenderRequest) -> RenderAnswer:
    """Render, validate and stage one object; the answer for the protocol. Every ring of every
    renderer is validated here (once: render_object leaves it to its callers)."""
    from data_pipeline.render.ring_checks import validate_ring
    from data_pipeline.render.settings import object_seed

    settings = _build_settings(request.settings)
    rings = renderer(
        request.asset_path,
        request.uid,
        request.caption,
        request.source,
        settings,
        object_seed(settings.seed, request.uid),  # same object, same rings, in any order
        sha256=request.sha256,
    )
    if not rings:
        raise Refusal(Reason.RENDER_ERROR, request.asset_path, "renderer returned no rings")
    samples = []
    for ring in rings:
        validate_ring(ring)
        samples.append(encode_sample(ring.meta, ring.views_png))
    atomic_write_bytes(request.out, tar_bytes(samples))
    return RenderAnswer(
        ok=True,
        rings=len(rings),
        blender_seconds=float(sum(r.blender_seconds for r in rings)),
        notes=sorted({note for r in rings for note in r.meta.notes}),
        rings_with_notes=sum(bool(r.meta.notes) for r in rings),
    )


def _exit_with_parent() -> None:
    """The render process never outlives its parent (a killed job leaves no Blender behind)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", default=DEFAULT_RENDERER, help="module:function")
    args = parser.parse_args(argv)
    _exit_with_parent()
    # The protocol gets a private copy of stdout; fd 1 then points at stderr (the log), so
    # whatever Blender or a library prints cannot corrupt an answer.
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    renderer = _load(args.renderer)
    if args.renderer in WARM_UP:
        _load(WARM_UP[args.renderer])()
    proto.write(Ready(pid=os.getpid()).to_line())
    proto.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            answer = render_to_tar(renderer, RenderRequest.from_line(line))
        except Refusal as refusal:
            answer = RenderAnswer.refused(refusal)
        except Exception as exc:  # not a refusal: environment, config or a bug (render.py)
            print(traceback.format_exc(), file=sys.stderr)
            answer = RenderAnswer.failed(exc)
        proto.write(answer.to_line())
        proto.flush()  # a buffered writer writes the whole line, also after an interruption


if __name__ == "__main__":
    main()
