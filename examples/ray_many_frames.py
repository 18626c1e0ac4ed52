"""Many frames over a Ray actor pool, one psi_gpu engine per actor (psi_gpu.distributed).

Usage: python3 examples/ray_many_frames.py FRAME.npy ... [--out DIR] [--actors 2] [--gpus-per-actor 0]
       python3 examples/ray_many_frames.py --generate 8 --size 256    (makes its own frames first)

With --gpus-per-actor 1 Ray gives each actor one GPU through CUDA_VISIBLE_DEVICES; the actor opens
that GPU's Vulkan adapter by its PCI bus id (Vulkan ignores the variable; see
psi_gpu.distributed.assigned_adapter). Without GPUs (Mesa's software driver) use 0.
"""
import argparse
import tempfile
import time
from pathlib import Path

import ray

import psi_gpu
from psi_gpu.distributed import ray_map_frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("frames", nargs="*")
    ap.add_argument("--out", default=None)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--gpus-per-actor", type=float, default=0)
    ap.add_argument("--generate", type=int, default=0, help="make this many frames first")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    frames = [Path(f) for f in a.frames]
    if a.generate:
        d = Path(tempfile.mkdtemp(prefix="psi-ray-"))
        engine = psi_gpu.Engine()
        import numpy as np

        for k in range(a.generate):
            frame, _ = engine.generate(height=a.size, width=a.size, dtype="u8", noise=2.0, seed=k)
            np.save(d / f"frame{k}.npy", frame)
            frames.append(d / f"frame{k}.npy")
        a.out = a.out or str(d / "heights")
    ray.init(num_cpus=max(2, a.actors), include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    stats = ray_map_frames(frames, a.out, actors=a.actors, num_gpus=a.gpus_per_actor)
    s = time.perf_counter() - t
    engines = sorted({(st["pid"], st["engine_id"]) for st in stats})
    print(f"{len(stats)} frames in {s:.2f} s ({len(stats) / s:.2f} frames/s, actor start-up included) "
          f"on {len(engines)} actor engines {engines}; outputs in {a.out or 'beside the inputs'}")
    ray.shutdown()


if __name__ == "__main__":
    main()
