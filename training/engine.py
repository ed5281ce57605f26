"""Distribution and optimisation: the only module that imports DeepSpeed.

training.train hands it the objective: the model and the diffusion whose loss trains it
(training.diffusion.TrainingObjective); this module wraps it in DeepSpeed. The DeepSpeed
config is generated from the typed `TrainConfig` (never kept as a second file):
ZeRO stage, precision, gradient accumulation, clipping, AdamW (torch's implementation, so nothing
is compiled), and a linear warm-up schedule. Only the variant's trainable parameters reach the
optimiser; the frozen encoders run under no_grad inside the model's encode_* methods.

The same code path runs on GPUs (nccl) and on a CPU (gloo, 1 or 2 processes), launched by plain
`python`, `torchrun` or the `deepspeed` launcher.

Shape legend: B objects, V target views (4), C latent channels, h x w latent size.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from training.config import TrainConfig
from training.diffusion import TrainingObjective
from training.examples import Batch

if TYPE_CHECKING:
    from training.model import ImageDream


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join (or, under plain `python`, create) the process group; works with torchrun, the
    deepspeed launcher and no launcher at all (then a world of one on 127.0.0.1)."""
    if "RANK" not in os.environ:  # plain python: DeepSpeed would otherwise look for MPI
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())),
        )
    import deepspeed

    _disable_shm_comm_op()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(
        rank=torch.distributed.get_rank(),
        local_rank=local_rank,
        world_size=torch.distributed.get_world_size(),
        device=device,
    )


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of this run, generated from the typed config."""
    e = cfg.engine
    micro = cfg.data.batch_size
    global_batch = micro * e.grad_accum * world_size
    if e.global_batch_size is not None and e.global_batch_size != global_batch:
        raise ValueError(
            f"engine.global_batch_size={e.global_batch_size} but data.batch_size={micro} x "
            f"engine.grad_accum={e.grad_accum} x {world_size} processes = {global_batch}; "
            "change data.batch_size or engine.grad_accum for this number of processes"
        )
    warmup = max(1, e.warmup_steps)  # warmup_steps=0: constant rate from the first step
    if e.lr_schedule == "constant":
        scheduler = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0 if e.warmup_steps else e.lr,
                "warmup_max_lr": e.lr,
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
            },
        }
    else:
        scheduler = {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(cfg.trainer.max_steps, warmup + 1),
                "warmup_num_steps": warmup,
                "warmup_type": "linear",
                "warmup_min_ratio": 0.0 if e.warmup_steps else 1.0,
                "cos_min_ratio": 0.0,
            },
        }
    zero: dict[str, Any] = {"stage": e.zero_stage}
    if e.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": e.grad_accum,
        "gradient_clipping": e.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": e.lr,
                "betas": list(e.betas),
                "eps": e.eps,
                "weight_decay": e.weight_decay,
                "torch_adam": True,  # torch.optim.AdamW: no C++ op to compile
                "adam_w_mode": True,
            },
        },
        "scheduler": scheduler,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {
            "enabled": e.precision == "bf16",
            "bf16_master_weights_and_grads": e.bf16_master_weights,
            "bf16_optimizer_states": e.bf16_master_weights,
        },
        "fp16": {"enabled": e.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 1 << 30,  # our own logging reports progress
        "wall_clock_breakdown": False,
    }


# ---------------------------------------------------------------------------------------------
# The engine


@dataclass
class StepMetrics:
    loss: float  # mean over the micro-batches of this optimiser step (this rank)
    grad_norm: float
    lr: float
    samples: int  # samples consumed by all ranks in this step


class Engine:
    """A DeepSpeed engine around the objective, with the few operations the loop needs."""

    def __init__(self, ds_engine: Any, objective: TrainingObjective, dist: DistInfo) -> None:
        self.ds = ds_engine
        self.objective = objective
        self.dist = dist
        self.generator = torch.Generator(device=dist.device)

    @property
    def model(self) -> ImageDream:
        """The unwrapped ImageDream (its weights are the trained ones)."""
        return self.objective.model

    def seed(self, seed: int) -> None:
        """Noise and timesteps come from a per-rank generator (saved in checkpoints)."""
        self.generator.manual_seed(seed * 1_000_003 + self.dist.rank)

    def train_step(self, micro_batches: list[Batch]) -> StepMetrics:
        """One optimiser step over `grad_accum` micro-batches."""
        self.ds.train()
        lr = float(self.ds.get_lr()[0])  # the rate this step's update uses
        losses = []
        grad_norm = None
        for i, batch in enumerate(micro_batches):
            loss = self.ds(batch, self.generator)  # TrainingObjective: diffusion.loss(model, batch)
            self.ds.backward(loss)
            if i == len(micro_batches) - 1 and self.ds.zero_optimization_stage() == 0:
                grad_norm = self._grad_norm()  # ZeRO-0 does not report it; grads are reduced here
            self.ds.step()
            losses.append(float(loss.detach()))
        if grad_norm is None:
            reported = self.ds.get_global_grad_norm()
            grad_norm = float(reported) if reported is not None else float("nan")
        return StepMetrics(
            loss=sum(losses) / len(losses),
            grad_norm=grad_norm,
            lr=lr,
            samples=sum(len(b) for b in micro_batches) * self.dist.world_size,
        )

    def _grad_norm(self) -> float:
        grads = [p.grad.float() for p in self.objective.parameters() if p.grad is not None]
        if not grads:
            return float("nan")
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    def mean_over_ranks(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.dist.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.dist.world_size

    def distinct_over_ranks(self, items: set[str]) -> int:
        """How many distinct items all ranks hold together (for the bad-record count: a bad
        shard met by several ranks is one bad shard)."""
        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, sorted(items))
        return len(set().union(*map(set, gathered)))

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def save_state(self, save_dir: Path, tag: str) -> None:
        """Model, optimiser and LR scheduler (every rank takes part; writes save_dir/tag/)."""
        self.ds.save_checkpoint(str(save_dir), tag=tag, save_latest=False)

    def load_state(self, load_dir: Path, tag: str) -> None:
        path, _ = self.ds.load_checkpoint(
            str(load_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise FileNotFoundError(f"DeepSpeed found no checkpoint {tag} in {load_dir}")

    def rng_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    @contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Whole parameters on every rank inside the block (ZeRO-3 partitions them; lower stages
        keep them whole anyway). Every rank must enter it."""
        if self.ds.zero_optimization_stage() < 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            yield

    def peak_memory_gib(self) -> float:
        if self.dist.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def close(self) -> None:
        barrier()


def build_engine(objective: TrainingObjective, cfg: TrainConfig, dist: DistInfo) -> Engine:
    """Wrap the objective in DeepSpeed; only trainable parameters reach AdamW."""
    import deepspeed

    objective.model.to(dist.device)
    if cfg.engine.gradient_checkpointing:
        objective.model.unet.enable_gradient_checkpointing()
    trainable = [p for p in objective.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"controller {cfg.controller.name!r} leaves no trainable parameter")
    ds_engine, _, _, _ = deepspeed.initialize(
        model=objective,
        model_parameters=trainable,
        config=deepspeed_config(cfg, dist.world_size),
    )
    engine = Engine(ds_engine, objective, dist)
    engine.seed(cfg.trainer.seed)
    return engine


def _disable_shm_comm_op() -> None:
    """On a CPU DeepSpeed JIT-compiles a shared-memory all-reduce op when the process group starts
    (30-60 s, ENV.md); gloo does the same job, so mark the op unavailable."""
    if torch.cuda.is_available():
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
