"""Rendering one object under a hard time limit, with bounded retries: the parent side of the
render process. No Ray in here.

`RenderWorker` fetches the asset, sends the request to its render process
(data_pipeline.render.process, through `RenderProcess`) and waits at most `time_limit_s`. A child
that overruns is killed (its whole process group) -> Reason.TIMEOUT; a child that dies ->
Reason.WORKER_CRASHED with the exit status and the log tail; either way a fresh child is started
for the next request. Transient reasons (refusals.TRANSIENT) are retried up to `max_attempts`;
the result is always an `ObjectResult`, never an exception.

Each `RenderWorker` owns a locked work folder WORK/render-XXXX (the render process's TMPDIR; see
data_pipeline.job.locks); the logs are in WORK/logs.

The job wraps `RenderWorker` in a Ray actor (run.py); tests drive it directly.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract import storage
from data_pipeline.job.locks import (
    LOCK_FILE,
    WORK_PREFIX,
    claim_work_dir,
    node_scratch,
    remove_stale_work_dirs,
)
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.process import DEFAULT_RENDERER
from data_pipeline.render.protocol import ProtocolError, Ready, RenderAnswer, RenderRequest
from data_pipeline.sources.base import ObjectSpec, Source

RENDER_PROCESS = "data_pipeline.render.process"  # run as `python -m RENDER_PROCESS`
STARTUP_TIMEOUT_S = 300.0  # importing bpy on a cold disk can take a while; not an object's fault
_REPO_ROOT = str(Path(__file__).resolve().parents[2])  # on the render process's PYTHONPATH
FETCH_DIR = "fetch"  # in the work folder: the object being rendered, when the source downloads it


@dataclass
class ObjectResult:
    """What happened to one object. `staged` holds the object's tar bytes when it rendered."""

    uid: str
    path: str
    attempts: int
    staged: bytes | None = None
    reason: str | None = None  # refusals.Reason value when refused
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
    store_retries: int = 0  # object-store requests retried while processing it (fetch, upload)

    @property
    def ok(self) -> bool:
        return self.staged is not None


class UnexpectedRenderError(RuntimeError):
    """The renderer raised something other than a Refusal (see render.blender.render_object)."""


class RenderProcess:
    """One child render process (data_pipeline.render.process), seen from its parent; restarted
    after a timeout, a crash or `recycle_after` objects.

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
                [sys.executable, "-m", RENDER_PROCESS, "--renderer", self.renderer],
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
        start, retries = time.monotonic(), storage.store_retries()
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
        result.store_retries = storage.store_retries() - retries
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
