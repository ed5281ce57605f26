"""The training stream: rings from WebDataset shards -> batches (training.examples makes each
example from its ring), read in a way that resumes exactly.

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
A shard in object storage becomes a bad record only through an error that survived the
store's retries (contract.storage: a 5xx answer, a timeout or a dropped connection is retried
with backoff, a bounded number of times); the retries each stream's reads needed are counted
(`DataState.store_retries`, per role; logged as data/store_retries).

A shard folder is read through its dataset index (contract.dataset_index, written last by the
render job): a folder without a complete index is refused unless `data.allow_incomplete=true`, and
each shard is checked against its index entry before it is read (size always, sha256 with
`data.verify_sha256=true`).

"""

from __future__ import annotations

import dataclasses
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from contract import storage
from contract.schema import SchemaError
from contract.shard_reader import shard_samples
from training.bad_data import BadDataBudget
from training.bad_data import BadDataError as BadDataError  # where callers catch it
from training.config import DataConfig
from training.examples import Batch, Example, RingDropped, collate, make_example
from training.shard_list import Shards, resolve_shards

log = logging.getLogger(__name__)

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
class StreamProgress:
    """Where one role's stream stands after a batch: travels beside the batch from the DataLoader
    worker that made it to the Loader, which folds it into the rank's DataState."""

    role: int  # which stream produced the batch
    consumed: int  # records (raw samples and bad shards) that stream has read after this batch
    bad_events: int  # bad records that stream has met so far (weighted), repeats included
    records: int  # records that stream has read so far (weighted): the budget's denominator
    position: dict[str, Any]  # that stream's StreamPosition after it
    new_dropped: list[str]  # rings a setting left out, since the previous batch
    new_bad: list[
        tuple[str, str]
    ]  # distinct bad records met since the previous batch: (id, reason)
    new_store_retries: int = 0  # object-store requests retried since the previous batch


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
    # object-store requests the role's reader retried (contract.storage.store_retries), per role
    store_retries: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.positions = self.positions or [StreamPosition().to_dict()] * self.num_workers
        self.consumed = self.consumed or [0] * self.num_workers
        self.bad_events = self.bad_events or [0] * self.num_workers
        self.records = self.records or list(self.consumed)
        self.bad_ids = self.bad_ids or [[] for _ in range(self.num_workers)]
        self.dropped = self.dropped or [[] for _ in range(self.num_workers)]
        self.store_retries = self.store_retries or [0] * self.num_workers

    @property
    def distinct_bad(self) -> set[str]:
        """The distinct bad records (samples and shards) this rank's streams have met."""
        return set().union(*self.bad_ids)

    @property
    def bad_samples(self) -> int:
        return len(self.distinct_bad)

    def update(self, progress: StreamProgress) -> None:
        role = progress.role
        if role != self.next_role:
            raise RuntimeError(
                f"data stream out of order: got role {role}, expected {self.next_role}"
            )
        self.consumed[role] = progress.consumed
        self.bad_events[role] = progress.bad_events
        self.records[role] = progress.records
        self.positions[role] = progress.position
        self.dropped[role].extend(progress.new_dropped)
        self.bad_ids[role].extend(i for i, _ in progress.new_bad)
        self.store_retries[role] += progress.new_store_retries
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
    """Infinite, seeded stream of (Batch, StreamProgress) for one rank; each DataLoader worker
    plays one role."""

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

    def role_batches(self, role: int) -> Iterator[tuple[Batch, StreamProgress]]:
        cfg, st = self.cfg, self.state
        consumed = st.consumed[role]
        where = f"stream {role} of rank {st.rank}"
        budget = BadDataBudget(
            cfg, where, st.bad_events[role], st.records[role], st.bad_ids[role], st.dropped[role]
        )
        retries = storage.store_retries()  # this process's count; the batches carry its growth
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
                now = storage.store_retries()
                retried, retries = now - retries, now
                progress = StreamProgress(
                    role=role,
                    consumed=consumed,
                    bad_events=budget.events,
                    records=budget.records,
                    position=stream.position().to_dict(),
                    new_dropped=budget.take_dropped(),
                    new_bad=budget.take_new(),
                    new_store_retries=retried,
                )
                yield collate(examples), progress
                examples = []

    def __iter__(self) -> Iterator[tuple[Batch, StreamProgress]]:
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
        self._iter: Iterator[tuple[Batch, StreamProgress]] | None = None

    def _start(self) -> Iterator[tuple[Batch, StreamProgress]]:
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
        return self.next_with_progress()[0]

    def next_with_progress(self) -> tuple[Batch, StreamProgress]:
        """The next batch and where its stream stood after it (already in `state`)."""
        if self._iter is None:
            self._iter = self._start()
        batch, progress = next(self._iter)
        self.state.update(progress)
        return batch, progress

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.state)  # a deep copy: later batches do not change it

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
