"""Many frames over many processes: one ``Engine`` per worker process, made once and reused.

Dask::

    from dask.distributed import Client, LocalCluster
    from psi_gpu.distributed import dask_map_frames
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        stats = dask_map_frames(client, frames, out_dir="heights", tile=512)

Ray: ``ray_map_frames(frames, out_dir, actors=2, num_gpus=1)`` (an actor pool, one engine per
actor). Outputs are named as ``psi-gpu infer A.npy B.npy -o DIR`` names them
(``DIR/<stem>.height.npy``), or go beside each input without ``out_dir``; each frame's
statistics come back as a dict (those of ``Engine.infer_file``, plus ``input``, ``pid``,
``engine_id``, ``host``).

GPU pinning: Vulkan ignores ``CUDA_VISIBLE_DEVICES``, so a worker that a scheduler gave one GPU
(dask-cuda, Ray's ``num_gpus``, Slurm's ``--gpus``: they set ``CUDA_VISIBLE_DEVICES``) opens the
adapter by that GPU's PCI bus id (``assigned_adapter``). Dask and Ray are imported only by the
functions that use them.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]
PLUGIN_NAME = "psi-gpu-engine"


def normalize_pci_bus_id(text: str) -> str:
    """``00000000:65:00.0`` (nvidia-smi) or ``0000:65:00.0`` as wgpu reports it: lowercase,
    a 4-digit domain."""
    t = text.strip().lower()
    parts = t.split(":")
    if len(parts) == 3:
        parts[0] = parts[0][-4:].rjust(4, "0")
    return ":".join(parts)


def pci_bus_id_of_cuda_device(device: str) -> Optional[str]:
    """The PCI bus id of the NVIDIA GPU ``device`` (an index or a UUID, as in
    ``CUDA_VISIBLE_DEVICES``), from ``nvidia-smi``; None where it cannot tell."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=pci.bus_id", "--format=csv,noheader", "-i", device],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
    return normalize_pci_bus_id(line) if line else None


def assigned_adapter(
    env: Optional[Mapping[str, str]] = None,
    lookup: Callable[[str], Optional[str]] = pci_bus_id_of_cuda_device,
) -> Optional[str]:
    """The adapter this process should open: ``PSI_GPU_ADAPTER`` if set; else the first GPU the
    scheduler assigned in ``CUDA_VISIBLE_DEVICES``, as its PCI bus id; else None (the default).

    A GPU that was assigned but whose bus id cannot be found is an error rather than a silent
    fall back to adapter 0, which would put every worker on one GPU.
    """
    env = os.environ if env is None else env
    if env.get("PSI_GPU_ADAPTER"):
        return env["PSI_GPU_ADAPTER"]
    first = env.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if not first or first.startswith("-"):
        return None
    bus = lookup(first)
    if bus is None:
        from .errors import AdapterError

        raise AdapterError(
            f"CUDA_VISIBLE_DEVICES assigns GPU {first}, but its PCI bus id could not be found (nvidia-smi); "
            "set PSI_GPU_ADAPTER to the bus id (psi_gpu.adapters() lists them)"
        )
    return bus


def output_for(input: PathLike, out_dir: Optional[PathLike] = None) -> Path:
    """``out_dir/<stem>.height.npy``, or ``<stem>.height.npy`` beside the input."""
    p = Path(input)
    folder = p.parent if out_dir is None else Path(out_dir)
    return folder / f"{p.stem}.height.npy"


def _run(engine: Any, input: PathLike, output: PathLike, options: Dict[str, Any]) -> Dict[str, Any]:
    stats = engine.infer_file(input, output, **options)
    stats.update(input=os.fspath(input), pid=os.getpid(), engine_id=engine.id, host=socket.gethostname())
    return stats


_process_engine = None
_process_lock = threading.Lock()


def process_engine(backend: Optional[str] = None, adapter: Union[None, int, str] = None) -> Any:
    """This process's engine, made on first call (on ``assigned_adapter()`` unless ``adapter``)."""
    global _process_engine
    with _process_lock:
        if _process_engine is None:
            from . import Engine

            _process_engine = Engine(backend, adapter if adapter is not None else assigned_adapter())
        return _process_engine


# --- Dask -------------------------------------------------------------------------------------


def _worker_plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class EngineWorkerPlugin(WorkerPlugin):
        """Makes the worker process's engine when the worker starts (once), keeps it."""

        name = PLUGIN_NAME

        def __init__(self, backend: Optional[str] = None, adapter: Union[None, int, str] = None) -> None:
            self.backend, self.adapter = backend, adapter

        def setup(self, worker: Any) -> None:
            process_engine(self.backend, self.adapter)

    return EngineWorkerPlugin


def engine_worker_plugin(backend: Optional[str] = None, adapter: Union[None, int, str] = None) -> Any:
    """A Dask ``WorkerPlugin`` that opens one engine per worker process at start-up (register it
    with ``client.register_plugin``); tasks then reuse it through ``process_engine()``."""
    return _worker_plugin_class()(backend, adapter)


def infer_task(input: PathLike, output: PathLike, options: Dict[str, Any]) -> Dict[str, Any]:
    """One frame on this worker process's engine (what ``dask_map_frames`` maps)."""
    return _run(process_engine(), input, output, options)


def dask_map_frames(
    client: Any,
    inputs: Sequence[PathLike],
    out_dir: Optional[PathLike] = None,
    *,
    backend: Optional[str] = None,
    adapter: Union[None, int, str] = None,
    **options: Any,
) -> List[Dict[str, Any]]:
    """Infer every frame of ``inputs`` on ``client``'s workers, one engine per worker process
    (``engine_worker_plugin``); ``options`` as ``Engine.infer_file`` takes them. Returns each
    frame's statistics, in input order; the first failure is raised."""
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    client.register_plugin(engine_worker_plugin(backend, adapter), name=PLUGIN_NAME)
    outputs = [os.fspath(output_for(i, out_dir)) for i in inputs]
    futures = client.map(infer_task, [os.fspath(i) for i in inputs], outputs, [options] * len(outputs), pure=False)
    return client.gather(futures)


# --- Ray --------------------------------------------------------------------------------------


class EngineActor:
    """A Ray actor body holding one engine (``ray.remote(num_gpus=...)(EngineActor)``)."""

    def __init__(self, backend: Optional[str] = None, adapter: Union[None, int, str] = None) -> None:
        self.engine = process_engine(backend, adapter)

    def infer(self, input: PathLike, output: PathLike, options: Dict[str, Any]) -> Dict[str, Any]:
        return _run(self.engine, input, output, options)


def ray_map_frames(
    inputs: Sequence[PathLike],
    out_dir: Optional[PathLike] = None,
    *,
    actors: int = 1,
    num_gpus: float = 0,
    backend: Optional[str] = None,
    adapter: Union[None, int, str] = None,
    **options: Any,
) -> List[Dict[str, Any]]:
    """Infer every frame over a pool of ``actors`` Ray actors (``num_gpus`` each: Ray then sets
    their ``CUDA_VISIBLE_DEVICES``, which ``assigned_adapter`` turns into a PCI bus id), one
    engine per actor; ``ray.init()`` first. Statistics in input order."""
    import ray
    from ray.util import ActorPool

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    actor = ray.remote(num_gpus=num_gpus)(EngineActor)
    pool = ActorPool([actor.remote(backend, adapter) for _ in range(actors)])
    jobs = [(os.fspath(i), os.fspath(output_for(i, out_dir))) for i in inputs]
    return list(pool.map(lambda a, job: a.infer.remote(job[0], job[1], options), jobs))
