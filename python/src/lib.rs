//! `psi_gpu._core`: the Rust half of the `psi_gpu` Python package. An [`Engine`] holds one
//! device (and so its compiled pipelines) for every call made on it; frames come in as numpy
//! arrays of any layout and go through the same tile stream as `psi-gpu infer` (read band by
//! band from the array, never copied whole), maps go out as numpy arrays that own the engine's
//! output. The GIL is released while the GPU works; the optional progress callback takes it
//! back for each call. Options arrive as the CLI's text (see [`options`]), errors leave as the
//! `psi_gpu.errors` classes with the CLI's message, and a panic is caught at the border
//! ([`errors::guarded`]) instead of aborting the interpreter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use ndarray::{ArrayView3, Axis};
use numpy::{IntoPyArray, PyReadonlyArray2, PyReadonlyArray3};
use psi_gpu::HostType;
use psi_gpu::commands::eval::eval_arrays;
use psi_gpu::commands::infer::{InferStats, classical_model, load_unet};
use psi_gpu::commands::infer_array::{ArrayOptions, ArrayOutput, infer_array};
use psi_gpu::commands::{generate, infer};
use psi_gpu::gpu::{AdapterChoice, AdapterReport, Gpu, GpuOptions, list_adapters};
use psi_gpu::nn::Model;
use psi_gpu::psi::reason::Reason;
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod errors;
mod options;

use errors::{Failure, guarded, raise, to_py};
use options::Options;

/// Engines made in this process so far (each gets the next number as its id).
static ENGINES: AtomicU64 = AtomicU64::new(0);

/// Quieten Mesa's display probe (see `psi_gpu::gpu::quiet_display_probe_env`) before the first
/// device is opened.
fn quiet_display_probe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Some((name, value)) = psi_gpu::gpu::quiet_display_probe_env() {
            // SAFETY: only set when the variable is unset or empty, before this module opens any
            // device; Python code reading the environment concurrently is the embedder's race.
            unsafe { std::env::set_var(name, value) };
        }
    });
}

fn adapter_dict<'py>(py: Python<'py>, a: &AdapterReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", a.index)?;
    d.set_item("name", &a.name)?;
    d.set_item("backend", &a.backend)?;
    d.set_item("device_type", &a.device_type)?;
    d.set_item("driver", &a.driver)?;
    d.set_item("pci_bus_id", if a.pci_bus_id.is_empty() { None } else { Some(&a.pci_bus_id) })?;
    d.set_item("f16", a.shader_f16)?;
    d.set_item("float_atomics", a.float32_atomics)?;
    d.set_item("subgroups", a.subgroups)?;
    let limits = PyDict::new(py);
    limits.set_item("max_storage_binding", a.max_storage_binding)?;
    limits.set_item("max_buffer", a.max_buffer)?;
    limits.set_item("max_workgroup_storage", a.max_workgroup_storage)?;
    limits.set_item("max_invocations_per_workgroup", a.max_invocations_per_workgroup)?;
    d.set_item("limits", limits)?;
    Ok(d)
}

/// Every adapter `backend` exposes, in the order an index counts them.
#[pyfunction]
#[pyo3(signature = (backend = "auto"))]
fn adapters<'py>(py: Python<'py>, backend: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
    quiet_display_probe();
    let backend = backend.to_string();
    let list = py.detach(|| guarded(|| Ok(list_adapters(&backend)?)));
    to_py(py, list)?.iter().map(|a| adapter_dict(py, a)).collect()
}

/// A frame's array, borrowed read-only as its numpy dtype.
enum Frame<'py> {
    U8(PyReadonlyArray3<'py, u8>),
    U16(PyReadonlyArray3<'py, u16>),
    F16(PyReadonlyArray3<'py, half::f16>),
    F32(PyReadonlyArray3<'py, f32>),
}

/// A view of a [`Frame`]: what crosses into the GIL-free part.
enum View<'a> {
    U8(ArrayView3<'a, u8>),
    U16(ArrayView3<'a, u16>),
    F16(ArrayView3<'a, half::f16>),
    F32(ArrayView3<'a, f32>),
}

impl<'py> Frame<'py> {
    fn of(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Frame<'py>> {
        if let Ok(a) = obj.extract::<PyReadonlyArray3<u8>>() {
            return Ok(Frame::U8(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray3<u16>>() {
            return Ok(Frame::U16(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray3<half::f16>>() {
            return Ok(Frame::F16(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray3<f32>>() {
            return Ok(Frame::F32(a));
        }
        let what = obj.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| obj.get_type().to_string());
        let shape = obj.getattr("shape").map(|s| s.to_string()).unwrap_or_default();
        Err(raise(
            py,
            "InvalidInputError",
            format!(
                "expected a (channels, height, width) numpy array of uint8, uint16, float16 or float32 \
                 (native byte order), got {what} {shape}"
            ),
        ))
    }

    fn view(&self) -> View<'_> {
        match self {
            Frame::U8(a) => View::U8(a.as_array()),
            Frame::U16(a) => View::U16(a.as_array()),
            Frame::F16(a) => View::F16(a.as_array()),
            Frame::F32(a) => View::F32(a.as_array()),
        }
    }

    fn ty(&self) -> HostType {
        match self {
            Frame::U8(_) => HostType::U8,
            Frame::U16(_) => HostType::U16,
            Frame::F16(_) => HostType::F16,
            Frame::F32(_) => HostType::F32,
        }
    }
}

/// `infer_array` on `view`, progress reported to `progress(done, total)` with the GIL taken
/// back; the first exception the callback raised is kept in `failed`.
fn run_view(
    gpu: &Gpu,
    model: &Model,
    view: View<'_>,
    opts: &ArrayOptions,
    progress: &Option<Py<PyAny>>,
    failed: &mut Option<PyErr>,
) -> psi_gpu::Result<ArrayOutput> {
    let on_tiles = |done: usize, total: usize| {
        if let Some(cb) = progress
            && failed.is_none()
        {
            Python::attach(|py| {
                if let Err(e) = cb.call1(py, (done, total)) {
                    *failed = Some(e);
                }
            });
        }
    };
    match view {
        View::U8(v) => infer_array(gpu, model, v, opts, on_tiles),
        View::U16(v) => infer_array(gpu, model, v, opts, on_tiles),
        View::F16(v) => infer_array(gpu, model, v, opts, on_tiles),
        View::F32(v) => infer_array(gpu, model, v, opts, on_tiles),
    }
}

/// What a model on an array hands back to Python: the main output ((H, W), or (C, H, W) with
/// more than one channel), the quality map and reason codes if made, and the run's statistics
/// as JSON text.
type Outputs = (Py<PyAny>, Option<Py<PyAny>>, Option<Py<PyAny>>, String);

fn outputs(py: Python<'_>, out: ArrayOutput) -> Outputs {
    let main = if out.main.dim().0 == 1 {
        out.main.index_axis_move(Axis(0), 0).into_pyarray(py).into_any().unbind()
    } else {
        out.main.into_pyarray(py).into_any().unbind()
    };
    let quality = out.quality.map(|q| q.into_pyarray(py).into_any().unbind());
    let mask = out.reasons.map(|m| m.into_pyarray(py).into_any().unbind());
    (main, quality, mask, stats_json(&out.stats).to_string())
}

fn stats_json(s: &InferStats) -> serde_json::Value {
    let reasons = s.reasons.map(|counts| {
        Reason::ALL
            .iter()
            .filter(|r| r.code() != 0)
            .map(|r| (r.name().to_string(), serde_json::json!(counts[r.code() as usize])))
            .collect::<serde_json::Map<_, _>>()
    });
    serde_json::json!({
        "seconds": s.stream.seconds,
        "tiles": s.stream.tiles,
        "tile": [s.stream.tile_h, s.stream.tile_w],
        "overlap": s.overlap,
        "batch": s.stream.batch,
        "megapixels_per_s": s.megapixels_per_s(),
        "model": s.model,
        "precision": s.precision.to_string(),
        "frame": s.shape,
        "input_dtype": s.input_type.name(),
        "input_scale": s.input_scale,
        "peak_gpu_bytes": s.stream.peak_gpu_bytes,
        "invalid_pixels": s.invalid,
        "invalid_by_reason": reasons,
    })
}

/// Run `model` (or the one `make` builds for the frame's type) over `frame` without the GIL.
fn run_frame<'m>(
    py: Python<'_>,
    gpu: &Gpu,
    frame: &Bound<'_, PyAny>,
    make: impl FnOnce(HostType) -> psi_gpu::Result<ModelRef<'m>> + Send,
    opts: ArrayOptions,
    progress: Option<Py<PyAny>>,
) -> PyResult<Outputs> {
    let frame = Frame::of(py, frame)?;
    let (ty, view) = (frame.ty(), frame.view());
    let mut failed = None;
    let result = py.detach(|| {
        guarded(|| {
            let model = make(ty)?;
            Ok(run_view(gpu, model.get(), view, &opts, &progress, &mut failed)?)
        })
    });
    let out = to_py(py, result)?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(outputs(py, out))
}

/// A model made for one call, or one kept by a [`UNet`].
enum ModelRef<'a> {
    Owned(Box<Model>),
    Borrowed(&'a Model),
}

impl ModelRef<'_> {
    fn get(&self) -> &Model {
        match self {
            ModelRef::Owned(m) => m,
            ModelRef::Borrowed(m) => m,
        }
    }
}

/// One GPU device with its compiled pipelines, reused by every call made on it.
#[pyclass(frozen, module = "psi_gpu._core")]
struct Engine {
    gpu: Arc<Gpu>,
    id: u64,
}

#[pymethods]
impl Engine {
    /// Open the adapter: `backend` auto|vulkan|dx12|metal|gl (default `PSI_GPU_BACKEND`, else
    /// auto); `adapter` an index, a PCI bus id or part of a name, as text (default
    /// `PSI_GPU_ADAPTER`, else the first in preference order).
    #[new]
    #[pyo3(signature = (backend = None, adapter = None))]
    fn new(py: Python<'_>, backend: Option<String>, adapter: Option<String>) -> PyResult<Engine> {
        quiet_display_probe();
        let mut opts = GpuOptions::from_env();
        if let Some(b) = backend {
            opts.backend = b;
        }
        if let Some(a) = adapter {
            opts.adapter = Some(to_py(py, a.parse::<AdapterChoice>().map_err(Failure::from))?);
        }
        let gpu = to_py(py, py.detach(|| guarded(|| Ok(Gpu::new(&opts)?))))?;
        Ok(Engine { gpu: Arc::new(gpu), id: ENGINES.fetch_add(1, Ordering::Relaxed) + 1 })
    }

    /// This engine's number in its process (1 for the first made, 2 for the next, ...).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The adapter, as `psi_gpu.adapters()` lists it.
    #[getter]
    fn adapter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        adapter_dict(py, &self.gpu.info)
    }

    /// The classical solver on `frame`; `options` as the CLI's text; quality/mask flags.
    #[pyo3(signature = (frame, options, progress = None))]
    fn classical(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        options: HashMap<String, String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Outputs> {
        let mut o = Options::new(options);
        let parsed = (|| -> psi_gpu::Result<_> {
            o.refuse_unused(false, None)?;
            let mut c = options::classical(&mut o)?;
            (c.quality, c.reason) = (o.flag("return_quality")?, o.flag("return_mask")?);
            let t = options::tiling(&mut o, c.input_scale)?;
            o.finish("classical")?;
            Ok((c, t))
        })();
        let (c, t) = to_py(py, parsed.map_err(Failure::from))?;
        let gpu = &*self.gpu;
        run_frame(py, gpu, frame, |ty| Ok(ModelRef::Owned(Box::new(classical_model(gpu, ty, &c)?))), t, progress)
    }

    /// Load U-Net weights (safetensors, PyTorch state_dict names) once for many frames.
    #[pyo3(signature = (path, precision = None))]
    fn unet(&self, py: Python<'_>, path: PathBuf, precision: Option<String>) -> PyResult<UNet> {
        let mut o = Options::new(precision.into_iter().map(|p| ("precision".to_string(), p)).collect());
        let precision = to_py(py, options::precision(&mut o).map_err(Failure::from))?;
        let gpu = self.gpu.clone();
        let p = path.clone();
        let model = to_py(py, py.detach(|| guarded(|| Ok(load_unet(&gpu, &p, precision)?))))?;
        Ok(UNet { gpu, model, path })
    }

    /// `psi-gpu infer INPUT -o OUTPUT ...` on this engine: the statistics `--stats-json` writes,
    /// as JSON text.
    #[pyo3(signature = (options, progress = None))]
    fn infer_file(
        &self,
        py: Python<'_>,
        options: HashMap<String, String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let mut o = Options::new(options);
        let parsed = options::infer(&mut o).and_then(|opts| o.finish("infer_file").map(|_| opts));
        let opts = to_py(py, parsed.map_err(Failure::from))?;
        let gpu = &*self.gpu;
        let mut failed: Option<PyErr> = None;
        let report = py.detach(|| {
            guarded(|| {
                let on_tiles = |done: usize, total: usize| {
                    if let Some(cb) = &progress
                        && failed.is_none()
                    {
                        Python::attach(|py| {
                            if let Err(e) = cb.call1(py, (done, total)) {
                                failed = Some(e);
                            }
                        });
                    }
                };
                Ok(infer::run(gpu, &opts, on_tiles)?)
            })
        });
        let report = to_py(py, report)?;
        if let Some(e) = failed {
            return Err(e);
        }
        let mut json = report.to_json();
        json["output"] = serde_json::json!(report.output);
        Ok(json.to_string())
    }

    /// `psi-gpu generate OUTPUT --truth TRUTH ...`: the frame's statistics as JSON text.
    #[pyo3(signature = (options, output, truth = None, truth_mask = None))]
    fn generate(
        &self,
        py: Python<'_>,
        options: HashMap<String, String>,
        output: PathBuf,
        truth: Option<PathBuf>,
        truth_mask: Option<PathBuf>,
    ) -> PyResult<String> {
        let mut o = Options::new(options);
        let parsed = options::generate(&mut o).and_then(|g| o.finish("generate").map(|_| g));
        let g = to_py(py, parsed.map_err(Failure::from))?;
        let opts = generate::Options {
            generate: g,
            output,
            truth,
            truth_mask,
            preview: None,
            preview_range: Default::default(),
        };
        let gpu = &*self.gpu;
        let report = to_py(py, py.detach(|| guarded(|| Ok(generate::run(gpu, &opts, |_, _| {})?))))?;
        let s = &report.stats;
        Ok(serde_json::json!({
            "shape": s.shape, "dtype": s.dtype.name(), "seconds": s.seconds,
            "height_range": [s.height_range.0, s.height_range.1],
        })
        .to_string())
    }
}

/// A U-Net loaded once on an engine; call it on frames.
#[pyclass(frozen, module = "psi_gpu._core")]
struct UNet {
    gpu: Arc<Gpu>,
    model: Model,
    path: PathBuf,
}

#[pymethods]
impl UNet {
    #[pyo3(signature = (frame, options, progress = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        options: HashMap<String, String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Outputs> {
        let mut o = Options::new(options);
        let parsed = (|| -> psi_gpu::Result<_> {
            o.refuse_unused(false, None)?;
            let scale = o.get::<psi_gpu::commands::args::InputScale>("input_scale")?.map(|s| s.0);
            let t = options::tiling(&mut o, scale)?;
            o.finish("the U-Net")?;
            Ok(t)
        })();
        let t = to_py(py, parsed.map_err(Failure::from))?;
        let model = &self.model;
        run_frame(py, &self.gpu, frame, |_| Ok(ModelRef::Borrowed(model)), t, progress)
    }

    #[getter]
    fn in_channels(&self) -> usize {
        self.model.in_channels()
    }

    #[getter]
    fn out_channels(&self) -> usize {
        self.model.out_channels()
    }

    #[getter]
    fn precision(&self) -> String {
        self.model.precision().to_string()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn name(&self) -> String {
        self.model.name()
    }
}

/// `psi-gpu eval` on maps in memory (float32, (H, W)): the metrics as JSON text.
#[pyfunction]
#[pyo3(signature = (pred, truth, mask = None, reasons = None))]
fn evaluate(
    py: Python<'_>,
    pred: PyReadonlyArray2<'_, f32>,
    truth: PyReadonlyArray2<'_, f32>,
    mask: Option<PyReadonlyArray2<'_, f32>>,
    reasons: Option<PyReadonlyArray2<'_, f32>>,
) -> PyResult<String> {
    let (p, t) = (pred.as_array(), truth.as_array());
    let (m, r) = (mask.as_ref().map(|m| m.as_array()), reasons.as_ref().map(|r| r.as_array()));
    let metrics = py.detach(|| guarded(|| Ok(eval_arrays(p, t, m, r)?)));
    Ok(to_py(py, metrics)?.to_json().to_string())
}

/// Raise `psi_gpu.errors.InternalError` from a panic inside the engine (tests check that a
/// panic becomes an exception and the interpreter lives on).
#[pyfunction]
fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    to_py(py, py.detach(|| guarded(|| -> Result<(), Failure> { panic!("a deliberate test panic") })))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(adapters, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_class::<Engine>()?;
    m.add_class::<UNet>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
