"""The training stream: rings from WebDataset shards -> batches of targets, prompt, cameras, text.

One ring gives one example (SPEC 3, 5): the 4 canonical target views (azimuth 0/90/180/270, i.e.
indices 0, V/4, V/2, 3V/4), an image prompt drawn from the views with azimuth in [-90, 90], both
ends included (V/2 + 1 candidates, symmetric about the front; both index rules are
contract.cameras.target_views and prompt_candidates), the targets' network cameras, the
text (`caption_text`: caption + ", 3d asset"; an object without a caption gets the suffix alone,
as the authors' scripts send it), every RGBA view composited on one random grey level per
example and resized as training.prompt_image prepares a prompt for sampling, and prompt / text
dropout.

Prompt dropout is only drawn here (`Example.prompt_dropped`, with the text emptied with it): the
model-side input of a dropped prompt is training.diffusion.unconditional_features, the same
function the sampler's CFG branch calls.

Exact resume in constant time. Each training process (rank) reads through `num_workers`
DataLoader workers; each worker plays one *role* r, an independent, seeded stream: shard order
from an RNG seeded by (seed, rank, r), a shuffle buffer with its own seeded RNG, and every
per-example random draw from an RNG seeded by (seed, rank, r, index of the record in the
stream). A checkpoint holds, per role, a `StreamPosition`: the next record to read (which shard
of the role's shard order, which record in it), the (shard, record) references of what the
shuffle buffer holds, and the buffer RNG's state; plus how many records each role has consumed
and which role the DataLoader's round-robin serves next. Resuming replays the shard order (RNG
draws, one per shard visited: no I/O), reads again only the shards the buffer's records came from
and the current shard up to its offset, and rotates the worker-to-role map: the data it reads
does not grow with training time.

Bad data goes through one path. A sample that does not decode (`SchemaError`) and a shard that
cannot be read (a truncated or damaged tar, a file whose size or sha256 differs from the dataset
index) are each one *bad record*, named by file and key; the good samples a damaged shard gave
before the damage are kept. Each distinct bad record is logged once with its reason and counted
once (`DataState.bad_samples`, logged as data/bad_samples), however often the stream meets it
again; nothing is ever replaced by other data. When more than `data.max_bad_fraction` of the
records a stream has read are bad (checked once it has read `data.bad_data_min_records`), the
run stops with `BadDataError` naming the files, so a stream where nothing decodes stops at once
instead of spinning.

A shard folder is read through its dataset index (contract.dataset_index, written last by the
render job): a folder without a complete index is refused unless `data.allow_incomplete=true`, and
each shard is checked against its index entry before it is read (size always, sha256 with
`data.verify_sha256=true`).

Shapes: B examples, V views in a ring, H x W pixels.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from contract.cameras import CANONICAL_AZIMUTHS_DEG, network_camera, prompt_candidates
from contract.cameras import target_views as ring_target_views
from contract.schema import META_EXT, RingMeta, RingRecord, SchemaError, decode_sample
from contract.shard_reader import shard_samples
from training.bad_data import BadDataBudget
from training.bad_data import BadDataError as BadDataError  # where callers catch it
from training.config import DataConfig
from training.prompt_image import PromptImages, composite_on_grey, vae_input
from training.shard_list import Shards, resolve_shards

log = logging.getLogger(__name__)

NUM_TARGETS = len(CANONICAL_AZIMUTHS_DEG)  # azimuth 0, 90, 180, 270 (SPEC 3)


# ---------------------------------------------------------------------------------------------
# One example from one ring


def target_views(num_views: int) -> list[int]:
    """contract.cameras.target_views of a ring read from a shard: a ring without views at
    0/90/180/270 is bad data (SchemaError)."""
    try:
        return ring_target_views(num_views)
    except ValueError as exc:
        raise SchemaError(str(exc)) from exc


def caption_text(caption: str, suffix: str) -> str:
    """The text the model sees for a caption (SPEC 5: caption + ", 3d asset"). An object without
    a caption gets the suffix alone, as the authors' scripts send an empty text (`text +
    suffix`); a dropped text is the empty one. Evaluation sends the same."""
    return caption.strip() + suffix


@dataclass
class Example:
    """One training example; images in [-1, 1], channels first."""

    key: str
    targets: np.ndarray  # (4, 3, H, W) float32
    prompt: np.ndarray  # (3, H, W) float32: the VAE input of the prompt
    prompt_rgb: np.ndarray  # (H', W', 3) uint8: the composited prompt at the render's size
    cameras: np.ndarray  # (4, 16) float32, contract.cameras.network_camera
    caption: str
    prompt_view: int  # ring index the prompt came from (the image is unused when dropped)
    elevation_deg: float  # the ring's elevation (the targets' cameras)
    grey: float  # background level in [0, 1]
    prompt_dropped: bool
    text_dropped: bool


def to_network(rgba: np.ndarray, grey: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 4) uint8 renders -> their composites on `grey` (N, H, W, 3) uint8 and the
    network images (N, 3, size, size) in [-1, 1]: training.prompt_image's preparation, so the
    prompt frame is made exactly as sampling makes it (and the targets the same way)."""
    rgb = composite_on_grey(rgba, grey)  # (N, H, W, 3)
    pixels = np.stack([vae_input(im, size).numpy() for im in rgb])  # (N, 3, S, S)
    return rgb, pixels


class RingDropped(Exception):
    """A well-formed ring that a data setting leaves out (not bad data)."""


def make_example(sample: dict[str, Any], rng: np.random.Generator, cfg: DataConfig) -> Example:
    """Decode one raw WebDataset sample into an Example; raises SchemaError on bad data.

    The random draws happen in a fixed order (prompt view, grey, prompt dropout, text dropout),
    so an example is a pure function of the sample and the RNG's seed.
    """
    key = str(sample.get("__key__", "?"))
    if META_EXT not in sample:
        raise SchemaError(f"sample {key}: no {META_EXT} member")
    meta = RingMeta.from_json(sample[META_EXT], key)
    if cfg.max_border_fraction is not None and meta.border_fraction:
        worst = max(meta.border_fraction)
        if worst > cfg.max_border_fraction:
            raise RingDropped(
                f"border fraction {worst:.2f} > data.max_border_fraction={cfg.max_border_fraction}"
                " (the object fills the frame)"
            )
    num_views = len(meta.azimuths_deg)
    if cfg.views_per_ring is not None and num_views != cfg.views_per_ring:
        raise SchemaError(
            f"sample {key}: ring has {num_views} views, data.views_per_ring={cfg.views_per_ring}"
        )
    targets = target_views(num_views)
    candidates = prompt_candidates(meta.azimuths_deg)
    if not candidates:
        raise SchemaError(f"sample {key}: no view with azimuth in [-90, 90]")
    prompt_view = candidates[int(rng.integers(len(candidates)))]
    grey = float(rng.uniform(cfg.grey_min, cfg.grey_max))
    prompt_dropped = bool(rng.random() < cfg.prompt_dropout)
    # the text goes with a dropped prompt (SPEC 5); text dropout alone is its own setting
    text_dropped = bool(rng.random() < cfg.text_dropout) or prompt_dropped

    record: RingRecord = decode_sample(sample, views=[*targets, prompt_view])
    wanted = np.asarray(meta.azimuths_deg, dtype=np.float64)[targets]
    offset = (wanted - np.asarray(CANONICAL_AZIMUTHS_DEG) + 180.0) % 360.0 - 180.0
    if not np.allclose(offset, 0, atol=1e-3):
        raise SchemaError(f"sample {key}: target azimuths {wanted.tolist()} are not 0/90/180/270")
    rgb, pixels = to_network(record.images, grey, cfg.image_size)  # (5, H, W, 3), (5, 3, S, S)
    use_text = cfg.use_captions and not text_dropped
    caption = caption_text(meta.caption, cfg.caption_suffix) if use_text else ""
    return Example(
        key=key,
        targets=pixels[:NUM_TARGETS],
        prompt=pixels[NUM_TARGETS],
        prompt_rgb=rgb[NUM_TARGETS],
        cameras=network_camera(record.c2w[:NUM_TARGETS]),
        caption=caption,
        prompt_view=prompt_view,
        elevation_deg=float(meta.elevation_deg),
        grey=grey,
        prompt_dropped=prompt_dropped,
        text_dropped=text_dropped,
    )


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """A micro-batch for one process, with the stream bookkeeping needed for exact resume."""

    targets: Tensor  # (B, 4, 3, H, W) in [-1, 1]
    prompt: PromptImages  # composites and VAE input; the CLIP input is made where it is read
    cameras: Tensor  # (B, 4, 16)
    captions: list[str]
    elevation_deg: list[float]
    prompt_dropped: Tensor  # (B,) bool: the model gets the unconditional image input
    text_dropped: Tensor  # (B,) bool
    keys: list[str]
    role: int = 0  # which stream produced it
    consumed: int = 0  # records (raw samples and bad shards) that stream has read after this batch
    bad_events: int = 0  # bad records that stream has met so far (weighted), repeats included
    records: int = 0  # records that stream has read so far (weighted): the budget's denominator
    position: dict[str, Any] = field(default_factory=dict)  # that stream's StreamPosition after it
    new_dropped: list[str] = field(default_factory=list)  # rings a setting left out, since then
    # distinct bad records the stream met since its previous batch: (id, reason)
    new_bad: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def collate(
    examples: Sequence[Example],
    role: int,
    consumed: int,
    budget: BadDataBudget,
    new_bad: list[tuple[str, str]],
    position: StreamPosition,
) -> Batch:
    return Batch(
        targets=torch.from_numpy(np.stack([e.targets for e in examples])),
        prompt=PromptImages(
            rgb=[e.prompt_rgb for e in examples],
            vae=torch.from_numpy(np.stack([e.prompt for e in examples])),
            clip=None,
        ),
        cameras=torch.from_numpy(np.stack([e.cameras for e in examples])),
        captions=[e.caption for e in examples],
        elevation_deg=[e.elevation_deg for e in examples],
        prompt_dropped=torch.tensor([e.prompt_dropped for e in examples]),
        text_dropped=torch.tensor([e.text_dropped for e in examples]),
        keys=[e.key for e in examples],
        role=role,
        consumed=consumed,
        bad_events=budget.events,
        records=budget.records,
        new_bad=new_bad,
        position=position.to_dict(),
        new_dropped=budget.take_dropped(),
    )


# ---------------------------------------------------------------------------------------------
# The stream


BAD_RECORD = "__bad__"  # key of the marker a stream yields for a shard it could not read
WEIGHT = "__weight__"  # how many records that marker stands for in the bad-data budget
# What reading a damaged tar raises: tarfile's and the file system's errors, EOFError, and
# ValueError (webdataset's duplicate-member and bad-header errors; SchemaError is one too)
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


@dataclass
class StreamPosition:
    """Where one role's stream stands (see the module docstring); JSON-able."""

    shard: int = 0  # position in the role's shard order of the shard read next
    offset: int = 0  # records already taken from that shard
    buffer: list[tuple[int, int]] = field(default_factory=list)  # (shard, offset), buffer order
    rng: dict[str, Any] | None = None  # the buffer RNG's state; None: fresh from its seed

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "offset": self.offset,
                "buffer": [list(ref) for ref in self.buffer], "rng": self.rng}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamPosition:
        buffer = [(int(k), int(o)) for k, o in d["buffer"]]
        return cls(int(d["shard"]), int(d["offset"]), buffer, d["rng"])


@dataclass
class DataState:
    """Where the stream of one rank stands; saved in every checkpoint (per rank)."""

    rank: int
    world_size: int
    num_workers: int  # streams (roles) of this rank; max(1, data.num_workers)
    next_role: int = 0  # the role whose batch the DataLoader yields next
    consumed: list[int] = field(default_factory=list)  # records read, per role
    bad_events: list[int] = field(default_factory=list)  # bad records met (repeats too), per role
    records: list[int] = field(default_factory=list)  # records read (weighted), per role
    bad_ids: list[list[str]] = field(default_factory=list)  # distinct bad records, per role
    positions: list[dict[str, Any]] = field(default_factory=list)  # StreamPosition, per role
    dropped: list[list[str]] = field(default_factory=list)  # rings left out by a setting, per role
    batches: int = 0

    def __post_init__(self) -> None:
        self.positions = self.positions or [StreamPosition().to_dict()] * self.num_workers
        self.consumed = self.consumed or [0] * self.num_workers
        self.bad_events = self.bad_events or [0] * self.num_workers
        self.records = self.records or list(self.consumed)
        self.bad_ids = self.bad_ids or [[] for _ in range(self.num_workers)]
        self.dropped = self.dropped or [[] for _ in range(self.num_workers)]

    @property
    def distinct_bad(self) -> set[str]:
        """The distinct bad records (samples and shards) this rank's streams have met."""
        return set().union(*self.bad_ids)

    @property
    def bad_samples(self) -> int:
        return len(self.distinct_bad)

    def update(self, batch: Batch) -> None:
        if batch.role != self.next_role:
            raise RuntimeError(
                f"data stream out of order: got role {batch.role}, expected {self.next_role}"
            )
        self.consumed[batch.role] = batch.consumed
        self.bad_events[batch.role] = batch.bad_events
        self.records[batch.role] = batch.records
        self.positions[batch.role] = batch.position
        self.dropped[batch.role].extend(batch.new_dropped)
        self.bad_ids[batch.role].extend(i for i, _ in batch.new_bad)
        self.next_role = (self.next_role + 1) % self.num_workers
        self.batches += 1

    def check_compatible(self, rank: int, world_size: int, num_workers: int) -> None:
        if (self.rank, self.world_size, self.num_workers) != (rank, world_size, num_workers):
            raise ValueError(
                "exact resume needs the same layout of data streams: the checkpoint was written "
                f"by rank {self.rank} of {self.world_size} with {self.num_workers} workers, this "
                f"is rank {rank} of {world_size} with {num_workers}"
            )


class RingStream(IterableDataset):
    """Infinite, seeded stream of Batches for one rank; each DataLoader worker plays one role."""

    def __init__(
        self, cfg: DataConfig, shards: Shards, seed: int, state: DataState, sampling_seed: int
    ) -> None:
        super().__init__()
        self.cfg, self.shards, self.seed, self.state = cfg, shards, seed, state
        self.urls = shards.urls
        self.sampling_seed = sampling_seed
        self._checked: dict[str, SchemaError | None] = {}

    def _shard_source(self, role: int) -> Iterator[dict[str, str]]:
        """Infinite shard order of one role (a pure function of seed, rank and role)."""
        st = self.state
        if self.cfg.sampling == "resampled":
            rng = np.random.default_rng([self.sampling_seed, st.rank, role, 0])
            while True:
                yield {"url": self.urls[int(rng.integers(len(self.urls)))]}
        streams = st.world_size * st.num_workers
        if len(self.urls) < streams:
            raise ValueError(
                f"data.sampling=epoch splits {len(self.urls)} shards over {streams} streams "
                f"({st.world_size} ranks x {st.num_workers} workers): some would get none; use "
                "more shards, fewer workers, or data.sampling=resampled"
            )
        epoch = 0
        while True:
            order = np.random.default_rng([self.sampling_seed, epoch, 1]).permutation(
                len(self.urls)
            )
            for i in order[st.rank * st.num_workers + role :: streams]:
                yield {"url": self.urls[int(i)]}
            epoch += 1

    def shard_records(self, url: str) -> Iterator[dict[str, Any]]:
        """The records of one shard, in order: its raw samples, and where it fails its index
        check or cannot be read (to its end), one bad-record marker, weighted by the rings it
        did not give (from the index; 1 without one) so that the bad-data budget sees a lost
        shard as the rings it held. The samples it gave before that are kept (webdataset drops
        the one it was assembling when the tar broke)."""
        entry = self.shards.entries.get(url)
        given = 0
        try:
            self._check(url, entry)
            for sample in shard_samples(url):  # a local file or streamed from its URL
                given += 1
                yield sample
        except _SHARD_ERRORS as exc:
            lost = max(1, entry.rings - given) if entry is not None else 1
            yield {"__key__": None, "__url__": url, BAD_RECORD: _reason(exc), WEIGHT: lost}

    def _check(self, url: str, entry: Any) -> None:
        """The shard against its index entry; the answer is kept per url (the file is hashed
        once per process, not at every visit)."""
        from contract.dataset_index import check_shard

        if entry is None:
            return
        if url not in self._checked:
            try:
                check_shard(url, entry, verify_sha256=self.cfg.verify_sha256)
                self._checked[url] = None
            except SchemaError as exc:
                self._checked[url] = exc
        if (error := self._checked[url]) is not None:
            raise error

    def role_batches(self, role: int) -> Iterator[Batch]:
        cfg, st = self.cfg, self.state
        consumed = st.consumed[role]
        where = f"stream {role} of rank {st.rank}"
        budget = BadDataBudget(
            cfg, where, st.bad_events[role], st.records[role], st.bad_ids[role], st.dropped[role]
        )
        stream = ShuffledRecords(self, role, StreamPosition.from_dict(st.positions[role]))
        examples: list[Example] = []
        for sample in stream:
            rng = np.random.default_rng([self.seed, st.rank, role, consumed])
            consumed += 1
            url = str(sample.get("__url__"))
            if BAD_RECORD in sample:
                budget.add(url, str(sample[BAD_RECORD]), int(sample[WEIGHT]))
                continue
            budget.read(1)
            try:
                examples.append(make_example(sample, rng, cfg))
            except SchemaError as exc:
                budget.add(f"{url} sample {sample.get('__key__')}", str(exc), 0)
                continue
            except RingDropped as exc:
                budget.drop(f"{url} sample {sample.get('__key__')}", str(exc))
                continue
            if len(examples) == cfg.batch_size:
                position = stream.position()
                yield collate(examples, role, consumed, budget, budget.take_new(), position)
                examples = []

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        return self.role_batches((worker + self.state.next_role) % self.state.num_workers)


class ShuffledRecords:
    """One role's records through its shuffle buffer, from a `StreamPosition` (webdataset's
    shuffle keeps its buffer and RNG to itself, so it could only be resumed by replaying the
    stream from the start). The buffer fills to `data.shuffle_initial` records before the first
    one leaves and then grows by one per record out, up to `data.shuffle_buffer`; each record
    out is a uniform draw from the buffer."""

    def __init__(self, stream: RingStream, role: int, position: StreamPosition) -> None:
        st = stream.state
        self.stream, self.cfg = stream, stream.cfg
        self.outputs = st.consumed[role]
        self.order = stream._shard_source(role)
        self.urls: dict[int, str] = {}  # shard position -> url, for the positions still needed
        self.next_position = 0
        self.rng = np.random.default_rng([stream.sampling_seed, st.rank, role, 2])
        if position.rng is not None:
            self.rng.bit_generator.state = position.rng
        self.buffer = self._rebuild(position.buffer)
        self.shard, self.offset = position.shard, position.offset
        self.reader = self._open(self.shard, skip=self.offset)

    def _url(self, k: int) -> str:
        """The url at position k of the role's shard order (replayed: RNG draws, no I/O)."""
        while self.next_position <= k:
            self.urls[self.next_position] = next(self.order)["url"]
            self.next_position += 1
        return self.urls[k]

    def _open(self, k: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        for url_k in [p for p in self.urls if p < k]:
            del self.urls[url_k]  # positions before the one being read are never needed again
        records = self.stream.shard_records(self._url(k))
        for i in range(skip):  # at most one shard read again: the one the run was reading
            if next(records, None) is None:
                raise RuntimeError(
                    f"cannot resume the stream: shard {self._url(k)} gave {i} records, the "
                    f"checkpoint had read {skip} from it (the shard changed or is unreadable)"
                )
        return records

    def _rebuild(self, refs: list[tuple[int, int]]) -> list[tuple[tuple[int, int], Any]]:
        """The buffer's records read again: each shard they came from once, up to the last."""
        wanted: dict[int, set[int]] = {}
        for k, offset in refs:
            wanted.setdefault(k, set()).add(offset)
        found: dict[tuple[int, int], Any] = {}
        for k in sorted(wanted):
            last = max(wanted[k])
            for offset, record in enumerate(self.stream.shard_records(self._url(k))):
                if offset in wanted[k]:
                    found[(k, offset)] = record
                if offset == last:
                    break
        missing = [ref for ref in refs if ref not in found]
        if missing:
            raise RuntimeError(
                f"cannot rebuild the shuffle buffer: records {missing[:5]} are gone from their "
                "shards (the shards changed since the checkpoint, or cannot be read now)"
            )
        return [(ref, found[ref]) for ref in refs]

    def _read(self) -> tuple[tuple[int, int], Any]:
        while True:
            record = next(self.reader, None)
            if record is not None:
                ref = (self.shard, self.offset)
                self.offset += 1
                return ref, record
            self.shard, self.offset = self.shard + 1, 0
            self.reader = self._open(self.shard)

    def __iter__(self) -> ShuffledRecords:
        return self

    def __next__(self) -> Any:
        fill = max(1, min(self.cfg.shuffle_buffer, self.cfg.shuffle_initial + self.outputs))
        while len(self.buffer) < fill:
            self.buffer.append(self._read())
        j = int(self.rng.integers(len(self.buffer)))
        self.buffer[j], self.buffer[-1] = self.buffer[-1], self.buffer[j]
        self.outputs += 1
        return self.buffer.pop()[1]

    def position(self) -> StreamPosition:
        return StreamPosition(
            self.shard,
            self.offset,
            [ref for ref, _ in self.buffer],
            dict(self.rng.bit_generator.state),
        )


class Loader:
    """Iterates micro-batches of one rank and tracks its DataState (exactly restorable)."""

    def __init__(self, cfg: DataConfig, state: DataState, seed: int) -> None:
        self.cfg, self.state, self.seed = cfg, state, seed
        self.shards = resolve_shards(cfg)
        self.urls = self.shards.urls
        self._iter: Iterator[Batch] | None = None

    def _start(self) -> Iterator[Batch]:
        dataset = RingStream(self.cfg, self.shards, self.seed, self.state, sampling_seed=self.seed)
        if self.cfg.num_workers == 0:
            return iter(dataset)
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.cfg.num_workers,
            prefetch_factor=2,
            persistent_workers=False,
            multiprocessing_context="fork" if os.name == "posix" else None,
        )
        return iter(loader)

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> Batch:
        if self._iter is None:
            self._iter = self._start()
        batch = next(self._iter)
        self.state.update(batch)
        return batch

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "rank": s.rank,
            "world_size": s.world_size,
            "num_workers": s.num_workers,
            "next_role": s.next_role,
            "consumed": list(s.consumed),
            "bad_events": list(s.bad_events),
            "records": list(s.records),
            "bad_ids": [list(ids) for ids in s.bad_ids],
            "positions": [dict(p) for p in s.positions],
            "dropped": [list(ids) for ids in s.dropped],
            "batches": s.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # "bad" (a count that included repeats) is what checkpoints before the bad-data budget held
        state = {k: v for k, v in state.items() if k != "bad"}
        if any(state.get("consumed", [])) and "positions" not in state:
            raise ValueError(
                "this checkpoint's data state was written before stream positions were saved: "
                "its stream cannot be rebuilt exactly; start a new run (or trainer.resume=never)"
            )
        restored = DataState(**state)
        restored.check_compatible(self.state.rank, self.state.world_size, self.state.num_workers)
        if self._iter is not None:
            raise RuntimeError("load the data state before iterating")
        self.state = restored


def build_loader(cfg: DataConfig, seed: int, rank: int = 0, world_size: int = 1) -> Loader:
    state = DataState(rank=rank, world_size=world_size, num_workers=max(1, cfg.num_workers))
    return Loader(cfg, state, seed)


def _reason(exc: BaseException) -> str:
    """A shard error as one line: webdataset appends the url to the arguments of what it passes
    on, which the record already names."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror  # args[0] is the errno
    else:
        text = str(exc.args[0]) if exc.args else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
