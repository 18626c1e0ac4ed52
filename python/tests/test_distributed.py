"""psi_gpu.distributed: frames over a real Dask LocalCluster (2 worker processes), each worker
one engine, the outputs those of the CLI."""
import os

import numpy as np
import pytest

from conftest import H, W, psi

from psi_gpu.distributed import assigned_adapter, normalize_pci_bus_id, output_for


def test_the_assigned_gpu_becomes_its_pci_bus_id():
    seen = []

    def lookup(device):
        seen.append(device)
        return {"2": "0000:b3:00.0"}.get(device)

    assert assigned_adapter({"CUDA_VISIBLE_DEVICES": "2,3"}, lookup) == "0000:b3:00.0" and seen == ["2"]
    assert assigned_adapter({"PSI_GPU_ADAPTER": "1", "CUDA_VISIBLE_DEVICES": "2"}, lookup) == "1"
    assert assigned_adapter({}, lookup) is None
    assert assigned_adapter({"CUDA_VISIBLE_DEVICES": ""}, lookup) is None
    with pytest.raises(ValueError, match="GPU 7"):
        assigned_adapter({"CUDA_VISIBLE_DEVICES": "7"}, lookup)
    assert normalize_pci_bus_id("00000000:65:00.0\n") == "0000:65:00.0"
    assert normalize_pci_bus_id("0000:B3:00.0") == "0000:b3:00.0"


def test_dask_local_cluster_two_workers_two_engines_cli_outputs(tmp_path):
    distributed = pytest.importorskip("distributed")
    from psi_gpu.distributed import PLUGIN_NAME, dask_map_frames, process_engine

    frames = []
    for k in range(5):
        f = tmp_path / "in" / f"frame{k}.npy"
        f.parent.mkdir(exist_ok=True)
        psi("generate", f, "--height", H, "--width", W, "--dtype", "u8", "--noise", 2, "--seed", k)
        frames.append(f)
    psi("infer", *frames, "-o", tmp_path / "cli", "--tile", 32)

    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            stats = dask_map_frames(client, frames, tmp_path / "dask", tile=32)
            engines = client.run(lambda: (os.getpid(), process_engine().id))
            plugins = client.run(lambda dask_worker: PLUGIN_NAME in dask_worker.plugins)
    assert all(plugins.values())
    # One engine per worker process, made once: two processes, each with engine number 1.
    assert len(engines) == 2 and sorted(e for _, e in engines.values()) == [1, 1]
    assert len({pid for pid, _ in engines.values()}) == 2
    pids = {pid for pid, _ in engines.values()}
    assert {s["pid"] for s in stats} <= pids and all(s["engine_id"] == 1 for s in stats)
    assert [s["input"] for s in stats] == [str(f) for f in frames]
    for f in frames:
        got = output_for(f, tmp_path / "dask")
        assert got.read_bytes() == (tmp_path / "cli" / f"{f.stem}.height.npy").read_bytes()
        assert np.load(got).shape == (H, W)
