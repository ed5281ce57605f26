"""The render process's typed protocol: what one side writes, the other reads back."""

from __future__ import annotations

import pytest

from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.protocol import ProtocolError, Ready, RenderAnswer, RenderRequest


def test_messages_round_trip_through_one_line():
    request = RenderRequest(
        uid="mug-0123456789",
        asset_path="/tmp/mug.glb",
        caption="a mug",
        source="local",
        sha256=None,
        settings={"num_views": 4, "resolution": 16},
        out="/tmp/work/mug.tar",
    )
    line = request.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert RenderRequest.from_line(line) == request
    assert Ready.from_line(Ready(pid=7).to_line()) == Ready(pid=7, ready=True)
    answer = RenderAnswer(ok=True, rings=2, blender_seconds=1.5, notes=["n"], rings_with_notes=1)
    assert RenderAnswer.from_line(answer.to_line()) == answer


def test_refusals_and_unexpected_errors_become_answers():
    refused = RenderAnswer.refused(Refusal(Reason.NO_FACES, "/x.obj", "no faces"))
    assert (refused.ok, refused.reason, refused.detail) == (False, "no_faces", "no faces")
    failed = RenderAnswer.failed(RuntimeError("boom"))
    assert (failed.ok, failed.unexpected, failed.detail) == (False, True, "RuntimeError: boom")


@pytest.mark.parametrize(
    "line", [b"", b"not json", b"[1, 2]", b'{"ok": true, "colour": "red"}', b'{"rings": 1}']
)
def test_a_line_that_is_not_the_message_is_refused_naming_it(line):
    with pytest.raises(ProtocolError, match="RenderAnswer"):
        RenderAnswer.from_line(line)
