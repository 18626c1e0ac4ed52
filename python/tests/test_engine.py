"""psi_gpu against the CLI on the same input: the same bytes (max difference 0)."""
import os
import threading

import numpy as np
import pytest

import psi_gpu
from conftest import DTYPES, FIXTURES, H, W, psi, same


@pytest.mark.parametrize("dt", DTYPES)
def test_classical_equals_the_cli_for_every_dtype(frames, engine, tmp_path, dt):
    frame_path, _ = frames[dt]
    out, mask = tmp_path / "h.npy", tmp_path / "m.npy"
    # Float frames have no default modulation floor (their unit is unknown): give the CLI's 3.
    floor = {"min_modulation": 3} if dt in ("f16", "f32") else {}
    flags = ["--min-modulation", 3] if floor else []
    psi("infer", frame_path, "-o", out, "--mask", mask, "--tile", 32, *flags)
    frame = np.load(frame_path)
    assert frame.dtype == {"u8": np.uint8, "u16": np.uint16, "f16": np.float16, "f32": np.float32}[dt]
    heights, reasons = engine.classical(frame, tile=32, return_mask=True, **floor)
    same(heights, np.load(out))
    assert reasons.dtype == np.uint8
    np.testing.assert_array_equal(reasons, np.load(mask))
    assert np.isnan(heights).any() and (reasons == 1).any(), "the dark patch is NaN, reason 1"
    if dt in ("u8", "u16"):
        assert (reasons == 2).any(), "the saturated patch is reason 2"


def test_options_reach_the_solver_as_the_cli_flags(frames, engine, tmp_path):
    frame_path, _ = frames["u8"]
    out, quality = tmp_path / "h.npy", tmp_path / "q.npy"
    flags = ["--unwrap", "robust", "--min-modulation", "0.05A", "--height-range", "-50,50", "--tile", 40]
    psi("infer", frame_path, "-o", out, "--quality", quality, *flags)
    h, q = engine.classical(
        np.load(frame_path), unwrap="robust", min_modulation="0.05A", height_range=(-50, 50), tile=40,
        return_quality=True,
    )
    same(h, np.load(out))
    same(q, np.load(quality))
    # And they change the result: the per-pixel solver differs somewhere here.
    frame = np.load(frame_path)
    assert not np.array_equal(h, engine.classical(frame, unwrap="per-pixel", tile=40), equal_nan=True)
    # The default is robust, as the CLI's.
    same(engine.classical(frame, tile=40), engine.classical(frame, unwrap="robust", tile=40))


def test_any_strides_give_the_same_heights(frames, engine):
    frame = np.load(frames["u16"][0])
    base = engine.classical(frame, tile=32)
    flipped = frame[:, ::-1, ::-1]  # negative strides
    same(engine.classical(flipped, tile=32)[::-1, ::-1], base)
    wide = np.zeros((frame.shape[0], H, 2 * W), frame.dtype)
    wide[:, :, ::2] = frame
    stepped = wide[:, :, ::2]  # a step of two elements
    assert not stepped.flags.c_contiguous
    same(engine.classical(stepped, tile=32), base)
    fortran = np.asfortranarray(frame)
    same(engine.classical(fortran, tile=32), base)


def test_wrong_input_is_a_value_error_with_the_reason(frames, engine):
    frame = np.load(frames["u8"][0])
    cases = [
        (frame[:5], "has 5 channels but the model"),
        (frame[0], "(channels, height, width)"),
        (frame.astype(np.int32), "dtype int32"),
        (frame.astype(np.float64), "dtype float64"),
        (frame.tolist(), "numpy array"),
        (frame[:, :0, :], "non-empty"),
    ]
    for bad, words in cases:
        with pytest.raises(ValueError, match=None) as info:
            engine.classical(bad)
        assert isinstance(info.value, psi_gpu.errors.InvalidInputError)
        assert words in str(info.value), str(info.value)
    for kwargs, words in [
        ({"unwrap": "sideways"}, "expected per-pixel, weighted or robust"),
        ({"phase_steps": [0, 90, 180]}, "phase"),
        ({"batch": 0}, "batch"),
        ({"min_modulation": -1}, "--min-modulation"),
    ]:
        with pytest.raises(psi_gpu.errors.InvalidInputError) as info:
            engine.classical(frame, **kwargs)
        assert words in str(info.value), (kwargs, str(info.value))


def test_byte_swapped_frames_are_read_as_their_values(frames, engine):
    frame = np.load(frames["u16"][0])
    swapped = frame.astype(frame.dtype.newbyteorder(">"))
    same(engine.classical(swapped, tile=32), engine.classical(frame, tile=32))


def test_unet_equals_the_cli(frames, engine, tmp_path):
    weights = FIXTURES / "unet_b8.safetensors"
    frame_path, _ = frames["u8"]
    out = tmp_path / "u.npy"
    psi("infer", frame_path, "--weights", weights, "--precision", "f32", "--tile", 48, "--overlap", 16, "-o", out)
    model = engine.unet(weights, precision="f32")
    assert (model.in_channels, model.out_channels, model.precision) == (16, 1, "f32")
    got = model(np.load(frame_path), tile=48, overlap=16)
    same(got, np.load(out))
    assert np.isfinite(got).all() and got.std() > 0


def test_unet_with_two_classes_returns_both(engine, tmp_path):
    weights = FIXTURES / "unet_b8_c3.safetensors"
    frame = np.random.default_rng(3).integers(0, 255, size=(3, 40, 56), dtype=np.uint8)
    np.save(tmp_path / "f.npy", frame)
    psi("infer", tmp_path / "f.npy", "--weights", weights, "--precision", "f32", "-o", tmp_path / "u.npy")
    got = engine.unet(weights, precision="f32")(frame)
    assert got.shape == (2, 40, 56)
    same(got, np.load(tmp_path / "u.npy"))
    with pytest.raises(ValueError, match="has 16 channels but the model"):
        engine.unet(weights)(np.zeros((16, 8, 8), np.uint8))


def test_infer_file_writes_what_the_cli_writes(frames, engine, tmp_path):
    frame_path, _ = frames["u8"]
    psi("infer", frame_path, "-o", tmp_path / "cli.tif", "--tile", 32)
    stats = engine.infer_file(frame_path, tmp_path / "py.tif", tile=32, mask=tmp_path / "m.npy")
    assert (tmp_path / "py.tif").read_bytes() == (tmp_path / "cli.tif").read_bytes()
    assert stats["tiles"] == 6 and stats["invalid_pixels"] > 0 and stats["output"].endswith("py.tif")
    with pytest.raises(OSError) as info:
        engine.infer_file(tmp_path / "missing.npy", tmp_path / "x.npy")
    assert isinstance(info.value, psi_gpu.errors.FileError) and "missing.npy" in str(info.value)
    with pytest.raises(psi_gpu.errors.FileError, match="is the same file as the input"):
        engine.infer_file(frame_path, frame_path)


def test_generate_and_evaluate_equal_the_cli(engine, tmp_path):
    frame, truth = psi_gpu.generate(height=H, width=W, dtype="u16", noise=3.0, seed=11, shape="random",
                                    engine=engine)
    psi("generate", tmp_path / "f.npy", "--truth", tmp_path / "t.npy", "--height", H, "--width", W,
        "--dtype", "u16", "--noise", 3.0, "--seed", 11, "--shape", "random")
    np.testing.assert_array_equal(frame, np.load(tmp_path / "f.npy"))
    np.testing.assert_array_equal(truth, np.load(tmp_path / "t.npy"))
    heights = engine.classical(frame)
    np.save(tmp_path / "h.npy", heights)
    psi("eval", tmp_path / "h.npy", tmp_path / "t.npy", "--json", tmp_path / "e.json")
    import json

    want = json.loads((tmp_path / "e.json").read_text())
    assert psi_gpu.evaluate(heights, truth) == want
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 20:60] = 1
    np.save(tmp_path / "mask.npy", mask)
    psi("eval", tmp_path / "h.npy", tmp_path / "t.npy", "--mask", tmp_path / "mask.npy", "--json", tmp_path / "e.json")
    assert psi_gpu.evaluate(heights, truth, mask=mask) == json.loads((tmp_path / "e.json").read_text())
    with pytest.raises(ValueError, match="the prediction is 64 x 95"):
        psi_gpu.evaluate(heights[:, 1:], truth)


def test_threads_share_one_engine_and_two_engines_run_at_once(frames, engine):
    inputs = [np.load(frames[dt][0]) for dt in ("u8", "f32")]
    want = [engine.classical(f, tile=32) for f in inputs]
    second = psi_gpu.Engine()
    assert second.id != engine.id
    results, errors = {}, []
    progress_calls = []

    def work(key, eng, frame):
        try:
            for _ in range(3):
                results.setdefault(key, []).append(
                    eng.classical(frame, tile=32, progress=lambda d, t: progress_calls.append((d, t)))
                )
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(("one", 0), engine, inputs[0])),
        threading.Thread(target=work, args=(("one", 1), engine, inputs[1])),
        threading.Thread(target=work, args=(("two", 0), second, inputs[0])),
        threading.Thread(target=work, args=(("two", 1), second, inputs[1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (_, i), got in results.items():
        assert len(got) == 3
        for g in got:
            same(g, want[i])
    # Each run reports after each batch and ends with all 6 tiles done.
    assert progress_calls.count((6, 6)) == 4 * 3 and all(t == 6 and 0 < d <= 6 for d, t in progress_calls)


def test_a_progress_exception_is_raised_after_the_run(frames, engine):
    def stop(done, total):
        raise KeyboardInterrupt("from the callback")

    with pytest.raises(KeyboardInterrupt, match="from the callback"):
        engine.classical(np.load(frames["u8"][0]), tile=32, progress=stop)


def test_adapters_and_choosing_one():
    listed = psi_gpu.adapters()
    assert listed and {"name", "backend", "device_type", "driver", "pci_bus_id", "f16", "float_atomics",
                       "limits"} <= set(listed[0])
    first = listed[0]
    assert psi_gpu.Engine(adapter=0).adapter["name"] == first["name"]
    by_name = psi_gpu.Engine(adapter=first["name"][:6].upper())
    assert by_name.adapter["name"] == first["name"]
    if first["pci_bus_id"]:
        assert psi_gpu.Engine(adapter=first["pci_bus_id"]).adapter["name"] == first["name"]
    with pytest.raises(psi_gpu.errors.AdapterError, match="no adapter with PCI bus id 0000:7f:1f.7"):
        psi_gpu.Engine(adapter="0000:7f:1f.7")
    with pytest.raises(ValueError, match="adapter index 99 does not exist"):
        psi_gpu.Engine(adapter=99)
    with pytest.raises(ValueError, match="unknown backend 'glide'"):
        psi_gpu.Engine(backend="glide")


def test_a_panic_is_an_exception_and_the_interpreter_lives_on(engine, frames):
    with pytest.raises(psi_gpu.errors.InternalError, match="deliberate test panic"):
        psi_gpu._core._panic_for_test()
    assert engine.classical(np.load(frames["u8"][0])).shape == (H, W)


def test_the_cli_takes_the_same_adapter_forms(tmp_path):
    import subprocess

    from conftest import BIN

    first = psi_gpu.adapters()[0]
    for choice in ["0", first["name"][:8].lower()] + ([first["pci_bus_id"]] if first["pci_bus_id"] else []):
        psi("--adapter", choice, "generate", tmp_path / "f.npy", "--height", 8, "--width", 8)
    done = subprocess.run([str(BIN), "--adapter", "0000:7f:1f.7", "generate", str(tmp_path / "g.npy")],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PSI_GPU_ADAPTER"})
    assert done.returncode == 2 and "no adapter with PCI bus id 0000:7f:1f.7" in done.stderr, done.stderr
    assert not (tmp_path / "g.npy").exists()
    env = {**os.environ, "PSI_GPU_ADAPTER": "no-such-gpu"}
    done = subprocess.run([str(BIN), "generate", str(tmp_path / "g.npy")], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "name containing 'no-such-gpu'" in done.stderr, done.stderr


@pytest.mark.parametrize("source, output", [("dark_u16_deflate.tif", "h.x3p"), ("folder_u16", "h.npy"),
                                            ("u16_imagej.tif", "h.tif")])
def test_infer_file_reads_and_writes_every_format_as_the_cli(engine, tmp_path, source, output):
    src = FIXTURES / "tiff" / source
    x3p = {"pixel_size": 0.5} if output.endswith(".x3p") else {}
    psi("infer", src, "-o", tmp_path / f"cli_{output}", "--tile", 16, *(["--pixel-size", 0.5] if x3p else []))
    stats = engine.infer_file(src, tmp_path / f"py_{output}", tile=16, **x3p)
    assert (tmp_path / f"py_{output}").read_bytes() == (tmp_path / f"cli_{output}").read_bytes()
    assert stats["frame"][0] == 16


def test_bad_files_raise_the_cli_message_and_write_nothing(engine, tmp_path):
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"\x93NUMPY\x01\x00garbage")
    cases = [(FIXTURES / "tiff" / "bad_truncated.tif", "truncated", ValueError),
             (FIXTURES / "tiff" / "bad_rgb.tif", "one page per bucket", ValueError),
             (bad_npy, "bad.npy", OSError)]
    for path, words, builtin in cases:
        with pytest.raises(psi_gpu.Error) as info:
            engine.infer_file(path, tmp_path / "h.npy")
        assert isinstance(info.value, builtin) and words in str(info.value), str(info.value)
        assert not (tmp_path / "h.npy").exists()


def test_the_gil_is_released_while_the_gpu_works(engine):
    frame, _ = psi_gpu.generate(height=256, width=384, dtype="u8", noise=2.0, engine=engine)
    state = {"running": False, "done": False}

    def work():
        state["running"] = True
        engine.classical(frame, tile=128)
        state["done"] = True

    t = threading.Thread(target=work)
    spins = 0
    t.start()
    while not state["done"]:
        if state["running"]:
            spins += 1
    t.join()
    # Holding the GIL for the run would leave this thread a few switch intervals (5 ms each)
    # at most; released, it spins for the whole run.
    assert spins > 200_000, spins


def test_options_the_run_would_not_use_are_refused_as_the_cli_does(frames, engine, tmp_path):
    frame_path, _ = frames["u8"]
    weights = FIXTURES / "unet_b8.safetensors"
    cases = [
        (lambda: engine.infer_file(frame_path, tmp_path / "h.npy", pixel_size=0.5), "--pixel-size sets the lateral"),
        (lambda: engine.infer_file(frame_path, tmp_path / "h.npy", weights=weights, wavelengths=[5, 6]),
         "--wavelengths applies to the classical solver only"),
        (lambda: engine.classical(np.load(frame_path), tile=0, overlap=8), "--overlap has no effect with --tile 0"),
        (lambda: engine.classical(np.load(frame_path), batch=2, gpu_memory=64), "--gpu-memory sizes the automatic"),
    ]
    for call, words in cases:
        with pytest.raises(psi_gpu.errors.InvalidInputError, match=words):
            call()
    assert not (tmp_path / "h.npy").exists()
    engine.infer_file(frame_path, tmp_path / "h.x3p", pixel_size=0.5)  # where it applies, it is taken
