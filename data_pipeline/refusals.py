"""Why an object was refused. Every refusal carries a reason code (for the quarantine ledger and
the job summary) and a human sentence naming the file."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    UNSUPPORTED_FORMAT = "unsupported_format"  # extension no loader handles
    UNDECODABLE = "undecodable"  # parser failed: truncated file, bad compression, bad JSON
    MISSING_BUFFER = "missing_buffer"  # glTF buffer/image referenced but absent
    NO_FACES = "no_faces"  # point cloud or empty scene
    NONFINITE_VERTICES = "nonfinite_vertices"  # NaN or inf positions
    INDEX_OUT_OF_RANGE = "index_out_of_range"  # face refers to a vertex that does not exist
    DEGENERATE_EXTENT = "degenerate_extent"  # bounding box of (near) zero size
    EMPTY_RENDER = "empty_render"  # rendered alpha is empty in some view
    INVALID_POSE = "invalid_pose"  # non-finite or non-orthonormal camera
    FETCH_FAILED = "fetch_failed"  # download or copy of the asset failed
    TIMEOUT = "timeout"  # exceeded the per-object time limit (process killed)
    RENDER_ERROR = "render_error"  # Blender raised; message kept in the ledger
    WORKER_CRASHED = "worker_crashed"  # the render process died without an answer


# Reasons worth another attempt; the others are properties of the asset and are final.
TRANSIENT = frozenset({Reason.FETCH_FAILED, Reason.TIMEOUT, Reason.WORKER_CRASHED})


class Refusal(Exception):
    """An object the pipeline will not turn into samples, and why."""

    def __init__(self, reason: Reason, path: str, detail: str):
        self.reason = Reason(reason)
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {self.reason.value}: {detail}")

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT
