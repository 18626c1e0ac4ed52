"""Frames per second for N generated frames on one device, four ways:

1. the CLI invoked once per frame (`psi-gpu infer F -o OUT`: device, pipelines, model each time),
2. the CLI with every frame in one process (`psi-gpu infer F1 F2 ... -o DIR`),
3. one psi_gpu.Engine reused (`engine.infer_file` per frame, and `engine.classical` on arrays),
4. a Dask LocalCluster (2 worker processes, one engine each, `psi_gpu.distributed`).

Usage: python3 examples/bench_many_frames.py [--frames 8] [--size 512] [--bin target/release/psi-gpu]
Prints each command or call and its time; checks that every way wrote the same bytes.
"""
import argparse
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import psi_gpu


def sh(cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def timed(label, n, fn):
    print(label, flush=True)
    t = time.perf_counter()
    fn()
    s = time.perf_counter() - t
    print(f"    {s:.2f} s, {n / s:.3f} frames/s", flush=True)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parents[1] / "target" / "release" / "psi-gpu"))
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="psi-bench-"))
    frames = []
    for k in range(a.frames):
        f = d / "in" / f"f{k}.npy"
        f.parent.mkdir(exist_ok=True)
        sh([a.bin, "generate", f, "--height", str(a.size), "--width", str(a.size), "--dtype", "u8",
            "--noise", "2", "--seed", str(k)])
        frames.append(f)
    n = len(frames)
    print(f"{n} frames of 16 x {a.size} x {a.size} u8 in {d}/in, on {psi_gpu.adapters()[0]['name']}")

    (d / "cli1").mkdir()
    cmd = f"for f in {d}/in/*.npy; do {a.bin} infer $f -o {d}/cli1/$(basename $f .npy).height.npy; done"
    timed(f"1. CLI per frame: {cmd}", n, lambda: subprocess.run(["bash", "-c", cmd], check=True, capture_output=True))
    cmd = [a.bin, "infer", *map(str, frames), "-o", str(d / "cli_many")]
    timed(f"2. CLI, all frames in one process: {shlex.join(cmd)}", n, lambda: sh(cmd))

    def engine_files():
        e = psi_gpu.Engine()
        for f in frames:
            e.infer_file(f, d / "engine" / f"{f.stem}.height.npy")

    (d / "engine").mkdir()
    timed("3a. one Engine (made inside the timing), engine.infer_file(f, out) per frame", n, engine_files)
    engine = psi_gpu.Engine()
    arrays = [np.load(f) for f in frames]
    timed("3b. one Engine (already made), engine.classical(array) per frame (arrays loaded)", n,
          lambda: [engine.classical(x) for x in arrays])

    from dask.distributed import Client, LocalCluster

    from psi_gpu.distributed import dask_map_frames

    def dask_run():
        with LocalCluster(n_workers=a.workers, processes=True, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t = time.perf_counter()
            dask_map_frames(client, frames, d / "dask")
            print(f"    (of which mapping the frames, workers and engines up: {time.perf_counter() - t:.2f} s)")

    timed(f"4. Dask LocalCluster(n_workers={a.workers}, processes=True, threads_per_worker=1) incl. start-up, "
          f"dask_map_frames(client, frames, out)", n, dask_run)
    for f in frames:
        name = f"{f.stem}.height.npy"
        ref = (d / "cli1" / name).read_bytes()
        for way in ("cli_many", "engine", "dask"):
            assert (d / way / name).read_bytes() == ref, (way, name)
    print("every way wrote the same bytes")


if __name__ == "__main__":
    main()
