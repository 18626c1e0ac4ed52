"""The engine API: ``Engine``, ``UNet``, ``adapters``, ``generate``, ``evaluate``.

Options are the CLI's flags as keywords (``--min-modulation 0.05A`` is
``min_modulation="0.05A"``); each value is handed to the Rust core as the text the CLI takes
and parsed by the CLI's own parsers, so a bad value raises the CLI's message.
"""
from __future__ import annotations

import json
import numbers
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .errors import InvalidInputError

Progress = Optional[Callable[[int, int], Any]]
PathLike = Union[str, "os.PathLike[str]"]

_FRAME_DTYPES = (np.uint8, np.uint16, np.float16, np.float32)


def _number(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        return repr(float(x))
    return str(x)


def _text(value: Any) -> str:
    """A keyword's value as the CLI's flag takes it: lists joined by ',', lists of lists by ';'."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if items and all(isinstance(v, (list, tuple, np.ndarray)) for v in items):
            return ";".join(",".join(_number(x) for x in v) for v in items)
        return ",".join(_number(x) for x in items)
    return _number(value)


def _options(**kwargs: Any) -> Dict[str, str]:
    return {k: _text(v) for k, v in kwargs.items() if v is not None}


def _frame(frame: Any) -> np.ndarray:
    """A (C, H, W) array of a supported dtype; copied only to fix a non-native byte order."""
    if not isinstance(frame, np.ndarray):
        raise InvalidInputError(f"expected a (channels, height, width) numpy array, got {type(frame).__name__}")
    if frame.ndim != 3:
        raise InvalidInputError(f"expected a (channels, height, width) array, got shape {frame.shape}")
    if not any(frame.dtype == np.dtype(t).newbyteorder(frame.dtype.byteorder) for t in _FRAME_DTYPES):
        raise InvalidInputError(
            f"expected a uint8, uint16, float16 or float32 frame, got dtype {frame.dtype} (shape {frame.shape})"
        )
    if not frame.dtype.isnative:
        frame = frame.astype(frame.dtype.newbyteorder("="))
    return frame


def _finish(out: Tuple[Any, Any, Any, str], extras: Sequence[Tuple[bool, int]], return_stats: bool) -> Any:
    main = out[0]
    picked = [out[i] for wanted, i in extras if wanted]
    if return_stats:
        picked.append(json.loads(out[3]))
    return (main, *picked) if picked else main


def adapters(backend: str = "auto") -> List[Dict[str, Any]]:
    """Every adapter ``backend`` exposes, in the order an ``Engine(adapter=N)`` index counts them.

    Each is a dict: index, name, backend, device_type, driver, pci_bus_id (None where the
    driver does not report one), f16, float_atomics, subgroups and limits (max_storage_binding,
    max_buffer, max_workgroup_storage, max_invocations_per_workgroup).
    """
    return _core.adapters(backend)


class UNet:
    """A U-Net loaded once on an engine (``Engine.unet``); call it on (C, H, W) frames."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def in_channels(self) -> int:
        return self._model.in_channels

    @property
    def out_channels(self) -> int:
        return self._model.out_channels

    @property
    def precision(self) -> str:
        return self._model.precision

    @property
    def path(self) -> Path:
        return Path(self._model.path)

    def __repr__(self) -> str:
        return f"<psi_gpu.UNet {self._model.name} from {self._model.path}, {self.precision}>"

    def __call__(
        self,
        frame: np.ndarray,
        *,
        tile: int = 512,
        overlap: Optional[int] = None,
        batch: Optional[int] = None,
        input_scale: Union[None, float, str] = None,
        gpu_memory: Optional[int] = None,
        return_stats: bool = False,
        progress: Progress = None,
    ) -> Any:
        """The model's output on ``frame``: (H, W) float32, or (C_out, H, W) with more than one
        class; tiled and blended as ``psi-gpu infer --weights`` (overlap 128 by default).
        ``input_scale``: the factor before the model (default: the weights' metadata, else
        1/255 for uint8, 1/65535 for uint16, 1 for floats)."""
        opts = _options(tile=tile, overlap=overlap, batch=batch, input_scale=input_scale, gpu_memory=gpu_memory)
        out = self._model(_frame(frame), opts, progress)
        return _finish(out, [], return_stats)


class Engine:
    """One GPU device, with its compiled pipelines, for every call made on it.

    ``backend``: auto, vulkan, dx12, metal or gl (None: ``PSI_GPU_BACKEND``, else auto).
    ``adapter``: an index as ``psi_gpu.adapters()`` lists them, a PCI bus id
    (``"0000:65:00.0"``: the way to pin one GPU — Vulkan ignores ``CUDA_VISIBLE_DEVICES``) or
    part of the adapter's name (None: ``PSI_GPU_ADAPTER``, else the first). Calls release the
    GIL while the GPU works; an engine can be used from several threads at once.
    """

    def __init__(self, backend: Optional[str] = None, adapter: Union[None, int, str] = None) -> None:
        self._engine = _core.Engine(backend, None if adapter is None else str(adapter))

    @property
    def id(self) -> int:
        """This engine's number in its process (1 for the first one made)."""
        return self._engine.id

    @property
    def adapter(self) -> Dict[str, Any]:
        """The adapter it runs on, as ``psi_gpu.adapters()`` describes it."""
        return self._engine.adapter

    def __repr__(self) -> str:
        a = self.adapter
        return f"<psi_gpu.Engine {self.id}: {a['name']} ({a['backend']}, {a['device_type']})>"

    def classical(
        self,
        frame: np.ndarray,
        *,
        wavelengths: Union[None, Sequence[float], str] = None,
        buckets: Optional[int] = None,
        phase_steps: Union[None, str, Sequence[float], Sequence[Sequence[float]]] = None,
        height_range: Union[None, Tuple[float, float], str] = None,
        unwrap: Optional[str] = None,
        min_modulation: Union[None, float, str] = None,
        saturation: Optional[float] = None,
        input_scale: Union[None, float, str] = None,
        tile: int = 512,
        overlap: Optional[int] = None,
        batch: Optional[int] = None,
        gpu_memory: Optional[int] = None,
        return_quality: bool = False,
        return_mask: bool = False,
        return_stats: bool = False,
        progress: Progress = None,
    ) -> Any:
        """Heights (H, W) float32 (µm) of the (C, H, W) bucket ``frame`` by the classical
        multi-wavelength solver, as ``psi-gpu infer`` writes them: NaN where not solvable.

        ``frame``: uint8, uint16, float16 or float32, any strides (read band by band, never
        copied whole); channel = laser * buckets + bucket. The options are infer's flags:
        ``wavelengths`` (µm), ``buckets``, ``phase_steps`` (degrees: one list, one per laser, or
        "nominal"), ``height_range`` (min, max µm), ``unwrap`` (robust, the default; weighted; per-pixel),
        ``min_modulation`` (counts, or "0.05A"), ``saturation`` (raw level), ``tile``,
        ``overlap``, ``batch``, ``gpu_memory`` (MiB). With ``return_quality`` / ``return_mask``
        / ``return_stats`` a tuple comes back: heights, then the fringe contrast (H, W) float32,
        the reason codes (H, W) uint8 (0 ok, 1 low modulation, 2 saturated, 3 non-finite input,
        4 order unresolved) and the run's statistics, in that order, as asked.
        ``progress(done, total)`` is called with tiles done.
        """
        opts = _options(
            wavelengths=wavelengths, buckets=buckets, phase_steps=phase_steps, height_range=height_range,
            unwrap=unwrap, min_modulation=min_modulation, saturation=saturation, input_scale=input_scale,
            tile=tile, overlap=overlap, batch=batch, gpu_memory=gpu_memory,
            return_quality=return_quality, return_mask=return_mask,
        )
        out = self._engine.classical(_frame(frame), opts, progress)
        return _finish(out, [(return_quality, 1), (return_mask, 2)], return_stats)

    def unet(self, path: PathLike, precision: str = "auto") -> UNet:
        """Load U-Net weights (safetensors with PyTorch state_dict names) once, for many frames.
        ``precision``: auto (f16 where the adapter has it), f32 or f16."""
        return UNet(self._engine.unet(os.fspath(path), precision))

    def infer_file(self, input: PathLike, output: Optional[PathLike] = None, *, progress: Progress = None,
                   **options: Any) -> Dict[str, Any]:
        """``psi-gpu infer INPUT -o OUTPUT`` on this engine: streamed from the file (npy, TIFF
        stack, folder of TIFF pages) to the file (npy, tif, x3p), every option as the CLI's flag
        (``weights``, ``quality``, ``mask``, ``preview``, ``stats_json``, ``pixel_size``,
        ``precision`` and the options of ``classical``). Returns the statistics ``--stats-json``
        writes, plus ``output``."""
        opts = _options(input=input, output=output, **options)
        return json.loads(self._engine.infer_file(opts, progress))

    def generate(self, *, truth_mask: bool = False, **options: Any) -> Tuple[np.ndarray, ...]:
        """``psi_gpu.generate`` on this engine."""
        with tempfile.TemporaryDirectory(prefix="psi-gpu-") as d:
            frame, truth, mask = (Path(d) / n for n in ("frame.npy", "truth.npy", "mask.npy"))
            self._engine.generate(_options(**options), str(frame), str(truth), str(mask) if truth_mask else None)
            arrays = [np.load(frame), np.load(truth)] + ([np.load(mask)] if truth_mask else [])
        return tuple(arrays)


_default: Optional[Engine] = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process's shared ``Engine()`` (made on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine()
        return _default


def generate(
    *,
    height: int = 512,
    width: int = 512,
    dtype: str = "f32",
    seed: int = 0,
    noise: float = 0.0,
    shape: str = "seed",
    wavelengths: Union[None, Sequence[float], str] = None,
    buckets: Optional[int] = None,
    phase_steps: Union[None, str, Sequence[float], Sequence[Sequence[float]]] = None,
    ab: Optional[Tuple[float, float]] = None,
    ab_variation: Optional[float] = None,
    height_scale: Optional[float] = None,
    height_offset: Optional[float] = None,
    slope: Optional[float] = None,
    truth_mask: bool = False,
    engine: Optional[Engine] = None,
) -> Tuple[np.ndarray, ...]:
    """A synthetic bucket frame made on the GPU, as ``psi-gpu generate`` makes it with the same
    flags: ``(frame, truth)`` — frame (L·N, H, W) of ``dtype`` (f32, f16, u8, u16), truth (H, W)
    float32 µm — and with ``truth_mask`` also the (H, W) uint8 reason a solver should give each
    pixel. Runs on ``engine`` (default: ``default_engine()``)."""
    e = engine or default_engine()
    return e.generate(
        height=height, width=width, dtype=dtype, seed=seed, noise=noise, shape=shape, wavelengths=wavelengths,
        buckets=buckets, phase_steps=phase_steps, ab=ab, ab_variation=ab_variation, height_scale=height_scale,
        height_offset=height_offset, slope=slope, truth_mask=truth_mask,
    )


def _map(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InvalidInputError(f"the {what} must be an (H, W) map, got shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32)


def evaluate(pred: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None,
             reasons: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """``psi-gpu eval`` on maps in memory: rmse, mae, max_abs, mape, bias, rmse_detrended,
    pixels, mape_pixels, invalid (NaN predictions, left out) and, with a reason mask, per-code
    counts under ``reasons``. ``mask`` selects (non-zero = evaluate); ``reasons`` is a reason
    mask as ``return_mask`` gives it. Non-finite metrics are None."""
    m = None if mask is None else _map(mask, "mask")
    r = None if reasons is None else _map(reasons, "reason mask")
    return json.loads(_core.evaluate(_map(pred, "prediction"), _map(truth, "truth"), m, r))
