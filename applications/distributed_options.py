"""The distribution flags (`--strategy` and the cluster settings) as `Options`, below both
`applications.distributed` (which starts a run's engine) and `applications.distributed_engines`
(the engines), so that those two depend one way."""

from __future__ import annotations

import argparse
import dataclasses

# strategy -> the Keras backend it runs on (None: any).
STRATEGIES = {
    "none": None,
    "mirrored": "tensorflow",
    "multi_worker": "tensorflow",
    "tpu": "tensorflow",
    "data_parallel": "jax",
    "model_parallel": "jax",
    "ddp": "torch",
}
OPTION_NAMES = ("strategy", "job_addresses", "num_processes", "process_id", "mesh_shape",
                "shard_embedding", "tpu")


def _mesh_shape(text: str) -> tuple[int, int]:
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected DATA,MODEL such as 2,2; got {text!r}")
    return values


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_options(p: argparse.ArgumentParser) -> None:
    """--strategy and the cluster flags (all default to "not given")."""
    g = p.add_argument_group("distribution (see docs/distributed.md)")
    g.add_argument("--strategy", choices=tuple(STRATEGIES),
                   help="none (default); TensorFlow: mirrored, multi_worker, tpu; JAX: "
                   "data_parallel, model_parallel; PyTorch: ddp")
    g.add_argument("--job-addresses", metavar="HOST:PORT[,HOST:PORT...]",
                   help="every process's address, process 0 first (JAX and torch need only "
                   "the first, the coordinator); 'auto' lets JAX detect a TPU pod/SLURM cluster")
    g.add_argument("--num-processes", type=int, help="processes in the job (one per host/GPU)")
    g.add_argument("--process-id", type=int, help="this process's index, 0 = chief")
    g.add_argument("--mesh-shape", type=_mesh_shape, metavar="DATA,MODEL",
                   help="model_parallel: device mesh (data-parallel x model-parallel), "
                   "default 1,all-devices")
    g.add_argument("--shard-embedding", type=_bool,
                   help="model_parallel: also shard the patch embedding (false)")
    g.add_argument("--tpu", help="tpu: TPU name or grpc:// address (default: local TPU VM)")


@dataclasses.dataclass
class Options:
    """The distribution flags of one process (not part of the saved run config:
    they differ between processes and may change when a run is resumed)."""

    strategy: str = "none"
    job_addresses: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    mesh_shape: tuple[int, int] | None = None
    shard_embedding: bool = False
    tpu: str | None = None

    @classmethod
    def pop_from(cls, explicit: dict) -> "Options":
        """Removes the distribution flags from `explicit`; returns them."""
        return cls(**{k: explicit.pop(k) for k in OPTION_NAMES if k in explicit})
