//! `psi-gpu infer A.npy B.tif … -o OUTDIR` and `psi-gpu infer DIR -o OUTDIR`: many frames in one
//! process. The device, its compiled pipelines and the model are made once — the classical
//! solver and the residual model once per input type, since their clip levels and modulation
//! floor come from the frame's raw type — and the frames run one after another through the same tile stream as a single
//! `infer`. Outputs are named after the inputs: `OUTDIR/<stem>.height.npy`, and with `--quality
//! Q`, `--mask M`, `--preview P` naming folders, `Q/<stem>.quality.npy`, `M/<stem>.mask.npy`,
//! `P/<stem>.png`. `--format tiff` writes `.tif` maps and `--format x3p` `.x3p` height maps
//! (the quality maps and masks stay `.npy`: an X3P holds one height map), each the bytes a single
//! `infer -o` of that extension writes. Every file and option is checked before any work (no
//! output on an input, no two frames on one output), and only then are missing output folders
//! made. A frame that cannot be read or solved (a damaged file, a wrong channel count) is
//! reported and skipped — its files are never left half-written — and the others go on; a device
//! error or Ctrl-C ends the run. With several adapters (`--adapters`), one worker thread each
//! takes every n-th frame.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::commands::infer::{InferOptions, Report as FrameReport, check_options, infer_with, load_model};
use crate::commands::outputs::Files;
use crate::commands::{Device, write_json};
use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::frame_source::FrameSource;
use crate::io::height_map::MapFormat;
use crate::io::preview::{PreviewOptions, write_preview};
use crate::nn::Model;

#[derive(Clone, Debug)]
pub struct Options {
    /// Frames and folders of frames, in the order given (see [`list_frames`]).
    pub inputs: Vec<PathBuf>,
    /// The folder for the height maps (made if missing, once everything is checked).
    pub out_dir: PathBuf,
    /// The maps' format: the height maps', and the quality maps' and masks' unless X3P (which
    /// holds heights only; they are `.npy` then).
    pub format: MapFormat,
    /// What every frame runs with; its input, output, quality and mask paths are set per frame.
    pub infer: InferOptions,
    /// Folders for each frame's quality map, reason mask and preview, if asked.
    pub quality_dir: Option<PathBuf>,
    pub mask_dir: Option<PathBuf>,
    pub preview_dir: Option<PathBuf>,
    /// One JSON for the run: every frame's statistics, or its error.
    pub stats_json: Option<PathBuf>,
}

/// One frame's outcome: its report, or the one-line reason it was skipped.
#[derive(Clone, Debug)]
pub struct Frame {
    pub input: PathBuf,
    pub result: std::result::Result<FrameReport, String>,
}

/// What a many-frame run did.
#[derive(Clone, Debug)]
pub struct Report {
    pub frames: Vec<Frame>,
    pub device: Device,
    pub seconds: f64,
}

impl Report {
    /// The frames that were skipped, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.frames.iter().filter_map(|f| f.result.as_ref().err().map(|e| (f.input.as_path(), e.as_str())))
    }

    pub fn to_json(&self) -> serde_json::Value {
        let frames: Vec<_> = self
            .frames
            .iter()
            .map(|f| match &f.result {
                Ok(r) => serde_json::json!({ "input": f.input, "output": r.output, "stats": r.to_json() }),
                Err(e) => serde_json::json!({ "input": f.input, "error": e }),
            })
            .collect();
        let failed = self.failures().count();
        serde_json::json!({
            "seconds": self.seconds, "frames": frames.len(), "failed": failed,
            "device": self.device.name, "backend": self.device.backend, "results": frames,
        })
    }
}

impl fmt::Display for Report {
    /// A line per written frame (as a single infer prints it), then the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for frame in &self.frames {
            if let Ok(r) = &frame.result {
                writeln!(f, "{r}")?;
            }
        }
        let done = self.frames.len() - self.failures().count();
        write!(f, "{done} of {} frames written to their files in {:.3} s", self.frames.len(), self.seconds)
    }
}

/// Whether folder `dir` is one frame — a folder of single-page TIFF buckets, no `.npy` among
/// them — rather than a folder of frames.
pub fn is_frame_folder(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|f| f.is_file()).collect();
    let tiffs: Vec<&PathBuf> = files.iter().filter(|f| is_frame_file(f) && !has_ext(f, "npy")).collect();
    !tiffs.is_empty()
        && !files.iter().any(|f| has_ext(f, "npy"))
        && tiffs.iter().all(|f| FrameSource::open(f).and_then(|s| s.frame_shape()).is_ok_and(|[c, _, _]| c == 1))
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|x| x.eq_ignore_ascii_case(ext))
}

/// A file a folder of frames holds: `.npy`, `.tif` or `.tiff`.
fn is_frame_file(path: &Path) -> bool {
    ["npy", "tif", "tiff"].iter().any(|ext| has_ext(path, ext))
}

/// The frames `inputs` name: files as given, folders of frames expanded to their `.npy`, `.tif`
/// and `.tiff` files (sorted), and a folder of single-page TIFF buckets as one frame.
pub fn list_frames(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut frames = Vec::new();
    for p in inputs {
        if !p.is_dir() || is_frame_folder(p) {
            frames.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && is_frame_file(f))
            .collect();
        if found.is_empty() {
            return Err(Error::Invalid(format!("{}: a folder with no .npy or TIFF frames", p.display())));
        }
        found.sort();
        frames.extend(found);
    }
    Ok(frames)
}

/// `dir/<stem of input><suffix>`.
fn named(dir: &Path, input: &Path, suffix: &str) -> PathBuf {
    let stem = input.file_stem().map_or("frame".into(), |s| s.to_string_lossy().into_owned());
    dir.join(format!("{stem}{suffix}"))
}

/// Frame `input`'s options: the shared ones with its own files.
fn frame_options(opts: &Options, input: &Path) -> InferOptions {
    let mut o = opts.infer.clone();
    o.input = input.to_path_buf();
    let (heights, extras) = match opts.format {
        MapFormat::X3p => ("x3p", "npy"),
        f => (f.extension(), f.extension()),
    };
    o.output = named(&opts.out_dir, input, &format!(".height.{heights}"));
    o.quality = opts.quality_dir.as_deref().map(|d| named(d, input, &format!(".quality.{extras}")));
    o.mask = opts.mask_dir.as_deref().map(|d| named(d, input, &format!(".mask.{extras}")));
    o
}

/// Every frame's files and the options, checked before work; then the missing output folders
/// made (nothing is made when anything is refused).
fn check(opts: &Options, frames: &[PathBuf]) -> Result<()> {
    let Some(first) = frames.first() else {
        return Err(Error::Invalid("no frames to infer".into()));
    };
    check_options(&frame_options(opts, first))?;
    if let Some(w) = &opts.infer.weights {
        std::fs::File::open(w).map_err(|e| Error::io(w, e))?;
    }
    let mut files = Files::new().inputs("a frame", frames).inputs("--weights", &opts.infer.weights);
    for input in frames {
        let (o, of) = (frame_options(opts, input), format!(" of {}", input.display()));
        files = files.outputs(&format!("the height map{of}"), [&o.output]);
        files = files.outputs(&format!("the quality map{of}"), &o.quality);
        files = files.outputs(&format!("the mask{of}"), &o.mask);
        files =
            files.outputs(&format!("the preview{of}"), opts.preview_dir.as_deref().map(|d| named(d, input, ".png")));
    }
    let dirs = [
        ("-o", Some(&opts.out_dir)),
        ("--quality", opts.quality_dir.as_ref()),
        ("--mask", opts.mask_dir.as_ref()),
        ("--preview", opts.preview_dir.as_ref()),
    ];
    for (role, dir) in dirs {
        let Some(dir) = dir else { continue };
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: with several frames, -o, --quality, --mask and --preview name folders, and this is a file",
                dir.display()
            )));
        }
        files = files.output_folder(role, dir);
    }
    files.outputs("--stats-json", &opts.stats_json).check()?;
    for dir in dirs.into_iter().filter_map(|(_, d)| d) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Errors that end the run rather than skip a frame: the device failing, or a stop request.
fn ends_the_run(e: &Error) -> bool {
    !matches!(e, Error::Npy { .. } | Error::Shape(_) | Error::Invalid(_) | Error::Io { .. })
}

/// Infer every frame on `gpus`, frame `k` on adapter `k mod gpus.len()` (a fixed assignment, so
/// a frame's bytes do not depend on which worker was free first), one worker thread per adapter;
/// `on_tiles(frame, frames, done, total)` reports progress.
pub fn run(gpus: &[&Gpu], opts: &Options, on_tiles: impl Fn(usize, usize, usize, usize) + Sync) -> Result<Report> {
    let t0 = Instant::now();
    let Some(first_gpu) = gpus.first() else {
        return Err(Error::Invalid("no adapter to run the frames on".into()));
    };
    let frames = list_frames(&opts.inputs)?;
    check(opts, &frames)?;
    let slots: Vec<Mutex<Option<Frame>>> = frames.iter().map(|_| Mutex::new(None)).collect();
    let ended: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for (worker, gpu) in gpus.iter().enumerate() {
            let (frames, slots, ended, on_tiles) = (&frames, &slots, &ended, &on_tiles);
            scope.spawn(move || {
                let mine = (worker..frames.len()).step_by(gpus.len());
                if let Err(e) = work(gpu, opts, frames, mine, slots, ended, on_tiles) {
                    ended.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = ended.into_inner().unwrap() {
        return Err(e);
    }
    let done = slots.into_iter().filter_map(|s| s.into_inner().unwrap()).collect();
    let report = Report { frames: done, device: Device::of(first_gpu), seconds: t0.elapsed().as_secs_f64() };
    if let Some(path) = &opts.stats_json {
        write_json(path, &report.to_json())?;
    }
    Ok(report)
}

/// One worker: frames `mine` on `gpu`, each outcome into its slot, until done or another worker
/// ended the run. The U-Net is loaded before any frame (bad weights end the run); the classical
/// solver once per raw type, when a frame of that type comes.
fn work(
    gpu: &Gpu,
    opts: &Options,
    frames: &[PathBuf],
    mine: impl Iterator<Item = usize>,
    slots: &[Mutex<Option<Frame>>],
    ended: &Mutex<Option<Error>>,
    on_tiles: &(impl Fn(usize, usize, usize, usize) + Sync),
) -> Result<()> {
    let mut models: HashMap<Option<HostType>, Model> = HashMap::new();
    if opts.infer.weights.is_some() {
        let o = frame_options(opts, &frames[0]);
        let model = load_model(gpu, &o)?;
        let key = match model {
            Model::UNet(_) => None,
            _ => Some(FrameSource::open(&o.input)?.ty()),
        };
        models.insert(key, model);
    }
    for k in mine {
        crate::error::interrupt::check()?;
        if ended.lock().unwrap().is_some() {
            return Ok(());
        }
        let (input, o) = (&frames[k], frame_options(opts, &frames[k]));
        let result = match one_frame(gpu, &mut models, &o, opts.preview_dir.as_deref(), |d, t| {
            on_tiles(k, frames.len(), d, t)
        }) {
            Ok(report) => Ok(report),
            Err(e) if ends_the_run(&e) => return Err(e),
            Err(e) => {
                let (message, shown) = (e.to_string(), input.display().to_string());
                Err(if message.contains(&shown) { message } else { format!("{shown}: {message}") })
            }
        };
        *slots[k].lock().unwrap() = Some(Frame { input: input.clone(), result });
    }
    Ok(())
}

/// One frame through the cached model (made on first use) and its preview.
fn one_frame(
    gpu: &Gpu,
    models: &mut HashMap<Option<HostType>, Model>,
    o: &InferOptions,
    preview_dir: Option<&Path>,
    on_tiles: impl FnMut(usize, usize),
) -> Result<FrameReport> {
    // A plain U-Net is the same model for every frame type (cached under None).
    let key = match models.get(&None) {
        Some(Model::UNet(_)) => None,
        _ => Some(FrameSource::open(&o.input)?.ty()),
    };
    let model = match models.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(load_model(gpu, o)?),
    };
    let stats = infer_with(gpu, model, o, on_tiles)?;
    let preview = match preview_dir {
        Some(dir) => {
            let png = named(dir, &o.input, ".png");
            let info = write_preview(&o.output, &png, &PreviewOptions::default())?;
            Some((png, info))
        }
        None => None,
    };
    Ok(FrameReport { output: o.output.clone(), stats, device: Device::of(gpu), preview })
}
