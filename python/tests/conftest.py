"""Shared pieces of the psi_gpu tests: the CLI binary they compare against and frames it made.

The CLI is the debug binary `target/debug/psi-gpu` that `cargo test` builds, as tests/python
uses it (`cargo build` makes it too). Frames are small (64 x 96) so that a run on Mesa's
software driver takes a fraction of a second.
"""
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "debug" / "psi-gpu"
FIXTURES = ROOT / "tests" / "fixtures"
H, W = 64, 96
DTYPES = ["u8", "u16", "f16", "f32"]


def psi(*args):
    """Run the CLI; its stdout, or a test failure with its stderr."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo test` (or `cargo build`) first")
    done = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def same(a, b):
    """Equal values, NaN in the same places, and no difference at all elsewhere."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in other places"
    ok = ~np.isnan(a)
    diff = np.abs(a[ok].astype(np.float64) - b[ok].astype(np.float64))
    assert diff.size == 0 or diff.max() == 0.0, f"max difference {diff.max()}"


# A noisy frame with a dark patch (NaN, reason 1) and, for the integer types, a saturated one.
GENERATE = ["--height", H, "--width", W, "--noise", "1.5", "--seed", "7", "--dark", "4,4,8,10"]


@pytest.fixture(scope="session")
def frames(tmp_path_factory):
    """dtype -> (frame path, truth path), made by the CLI."""
    d = tmp_path_factory.mktemp("frames")
    out = {}
    for dt in DTYPES:
        extra = ["--saturate", "40,60,6,6"] if dt in ("u8", "u16") else []
        if dt == "u16":
            extra += ["--ab", "30000,20000"]
        f, t = d / f"frame_{dt}.npy", d / f"truth_{dt}.npy"
        psi("generate", f, "--truth", t, "--dtype", dt, *GENERATE, *extra)
        out[dt] = (f, t)
    return out


@pytest.fixture(scope="session")
def engine():
    import psi_gpu

    return psi_gpu.Engine()
