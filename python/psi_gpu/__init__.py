"""psi_gpu: phase-shifting-interferometry bucket frames to height maps on any GPU.

The Python face of the psi-gpu engine (Rust, wgpu compute shaders)::

    import psi_gpu
    engine = psi_gpu.Engine()                      # one device, pipelines compiled once
    frame, truth = psi_gpu.generate(height=256, width=256, dtype="u8", noise=2.0)
    heights = engine.classical(frame)              # (H, W) float32 µm, NaN = not solvable
    print(psi_gpu.evaluate(heights, truth)["rmse"])

``psi_gpu.distributed`` runs many frames over Dask workers or Ray actors, one engine each.
"""
from . import errors
from ._core import __version__
from ._engine import Engine, UNet, adapters, default_engine, evaluate, generate
from .errors import Error

__all__ = ["Engine", "UNet", "adapters", "default_engine", "evaluate", "generate", "errors", "Error", "__version__"]
