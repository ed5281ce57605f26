"""The render process: imports Blender once, then renders, checks and stages one object a request.

A long-lived child: for each request it renders the object, validates every ring and writes the
object's samples as one tar.

    python -m data_pipeline.render.process [--renderer module:function]

Its parent (data_pipeline.job.worker.RenderProcess) starts it, sends it requests and kills it
when it overruns. It answers on a private pipe, one JSON line per request (the typed messages of
data_pipeline.render.protocol); Blender's own chatter goes to the log file (stderr), never into
the protocol. A Refusal becomes a refused answer; any other exception a failed one (the parent
then starts a fresh process: this one's Blender state is suspect).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from contract.atomic import atomic_write_bytes
from contract.schema import encode_sample
from contract.shard_writer import tar_bytes
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.protocol import Ready, RenderAnswer, RenderRequest

DEFAULT_RENDERER = "data_pipeline.render.blender:render_object"
# Called once when a render process starts, before its "ready": BlenderProc's start-up (bpy
# import, scene init) then counts as start-up, not as the first object's render time or limit.
WARM_UP = {DEFAULT_RENDERER: "data_pipeline.render.blenderproc_env:ensure_blenderproc"}


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
        except Exception as exc:  # not a refusal: environment, config or a bug (blender.py)
            print(traceback.format_exc(), file=sys.stderr)
            answer = RenderAnswer.failed(exc)
        proto.write(answer.to_line())
        proto.flush()  # a buffered writer writes the whole line, also after an interruption


if __name__ == "__main__":
    main()
