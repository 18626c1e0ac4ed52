"""Our outputs read back by the formats' own tools: tifffile for TIFF, surfalize for X3P.

Builds nothing: runs the debug binary target/debug/psi-gpu (which `cargo test` builds) on the
committed tifffile-written fixtures (tests/fixtures/make_tiff_fixtures.py). Needs
`python3 -m pip install tifffile==2026.3.3 numpy==2.4.6 surfalize==0.19.2 pytest==9.2.0`.
"""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from surfalize import Surface

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "debug" / "psi-gpu"
FIX = ROOT / "tests" / "fixtures" / "tiff"
TILES = ["--tile", "16", "--overlap", "4"]


def psi(*args):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo test` (or `cargo build`) first")
    done = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """infer on the u16 Deflate stack with a dark (NaN) patch, to npy, tif and x3p."""
    d = tmp_path_factory.mktemp("maps")
    stack = FIX / "dark_u16_deflate.tif"
    for name, extra in [("h.npy", []), ("h.tif", []), ("h.x3p", ["--pixel-size", "0.5"])]:
        psi("infer", stack, "-o", d / name, *TILES, *extra)
    return d


def test_tifffile_reads_h_tif_equal_to_h_npy(maps):
    h = np.load(maps / "h.npy")
    t = tifffile.imread(maps / "h.tif")
    assert t.dtype == np.float32 and t.shape == h.shape == (24, 32)
    assert np.isnan(h).sum() >= 24, "the dark patch is NaN"
    np.testing.assert_array_equal(t, h)  # NaN where h is NaN, the same floats elsewhere
    page = tifffile.TiffFile(maps / "h.tif").pages[0]
    assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.sampleformat == 3


def test_surfalize_reads_h_x3p_in_micrometres_with_the_step(maps):
    h = np.load(maps / "h.npy")
    s = Surface.load(maps / "h.x3p")
    assert s.step_x == pytest.approx(0.5) and s.step_y == pytest.approx(0.5)
    assert s.data.shape == h.shape
    assert np.array_equal(np.isnan(s.data), np.isnan(h)), "NaN exactly where our output has NaN"
    ok = ~np.isnan(h)
    np.testing.assert_allclose(s.data[ok], h[ok], rtol=1e-6, atol=1e-6)  # µm, through f32 metres


def test_x3p_checksums_and_record_are_what_the_standard_asks(maps):
    import hashlib
    import zipfile

    with zipfile.ZipFile(maps / "h.x3p") as z:
        xml = z.read("main.xml")
        data = z.read("bindata/data.bin")
        checksum = z.read("md5checksum.hex").decode().split()[0]
    assert checksum == hashlib.md5(xml).hexdigest()
    text = xml.decode()
    assert hashlib.md5(data).hexdigest().upper() in text
    assert "<FeatureType>SUR</FeatureType>" in text and "<Increment>5e-7</Increment>" in text
    assert "5, 5.5, 6.05, 6.655 µm" in text, "the wavelengths are in the instrument record"
    np.testing.assert_allclose(np.frombuffer(data, "<f4").reshape(24, 32) * 1e6, np.load(maps / "h.npy"), rtol=1e-6, atol=1e-6)


def test_a_folder_of_tifffile_pages_infers_like_the_stack(tmp_path):
    psi("infer", FIX / "folder_u16", "-o", tmp_path / "folder.npy", *TILES)
    psi("infer", FIX / "u16_deflate.tif", "-o", tmp_path / "stack.npy", *TILES)
    assert (tmp_path / "folder.npy").read_bytes() == (tmp_path / "stack.npy").read_bytes()


def test_tifffile_reads_our_converted_stacks(tmp_path):
    for ty in ["u8", "u16", "f32"]:
        npy = FIX / f"stack_{ty}.npy"
        psi("convert", npy, tmp_path / f"{ty}.tif")
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{ty}.tif"), np.load(npy))
    psi("convert", FIX / "stack_u16.npy", tmp_path / "pages", "--format", "tif")
    pages = [tifffile.imread(tmp_path / "pages" / f"bucket_{k:02d}.tif") for k in range(16)]
    np.testing.assert_array_equal(np.stack(pages), np.load(FIX / "stack_u16.npy"))
