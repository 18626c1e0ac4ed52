//! Infer on a frame held in memory (what the Python package's `Engine` calls): a `(C, H, W)`
//! [`ArrayView3`] of any layout goes through the same tile stream as a file — read band by band
//! ([`ArrayFrame`]), tiled, batched, blended — and the finished rows land in arrays instead of
//! files. Same model, options and device: the same values as `psi-gpu infer` writes.

use ndarray::{Array2, Array3, ArrayView3, s};

use crate::commands::infer::InferStats;
use crate::dtype::HostElement;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::array_frame::ArrayFrame;
use crate::io::bands::Bands;
use crate::nn::Model;
use crate::tiling::region::input_scale;
use crate::tiling::{StreamOptions, stream, tiles_for};

/// How the frame is tiled and scaled, as `infer`'s flags of the same names.
#[derive(Clone, Debug)]
pub struct ArrayOptions {
    pub tile: usize,
    pub overlap: Option<usize>,
    pub batch: Option<usize>,
    pub input_scale: Option<f32>,
    pub memory_budget: u64,
}

impl Default for ArrayOptions {
    fn default() -> Self {
        ArrayOptions { tile: 512, overlap: None, batch: None, input_scale: None, memory_budget: 2 << 30 }
    }
}

/// The model's outputs: the main channels `(C_out, H, W)` (the height map is channel 0), and
/// the classical solver's quality map and reason codes when it was made with them.
#[derive(Clone, Debug)]
pub struct ArrayOutput {
    pub main: Array3<f32>,
    pub quality: Option<Array2<f32>>,
    pub reasons: Option<Array2<u8>>,
    pub stats: InferStats,
}

/// Run `model` over `frame`; `on_tiles(done, total)` reports progress.
pub fn infer_array<T: HostElement>(
    gpu: &Gpu,
    model: &Model,
    frame: ArrayView3<T>,
    opts: &ArrayOptions,
    on_tiles: impl FnMut(usize, usize),
) -> Result<ArrayOutput> {
    let mut reader = ArrayFrame::new(frame, "the frame");
    let [c, h, w] = reader.frame_shape()?;
    let (q, r) = match model {
        Model::Classical(cl) => (cl.config.quality, cl.config.reason),
        _ => (false, false),
    };
    let main_c = model.out_channels() - q as usize - r as usize;
    let mut main = Array3::<f32>::zeros((main_c, h, w));
    let mut quality = q.then(|| Array2::<f32>::zeros((h, w)));
    let mut reasons = r.then(|| Array2::<u8>::zeros((h, w)));
    let scale = input_scale(opts.input_scale, model.input_scale(), T::TYPE);
    let o = tiles_for(model.reach(), opts.tile, opts.overlap);
    let sopts = StreamOptions {
        tile: opts.tile,
        overlap: o.overlap,
        batch: opts.batch,
        input_scale: scale,
        memory_budget: opts.memory_budget,
        band_limit: None,
    };
    let stats = stream(
        gpu,
        model,
        &mut reader,
        &sopts,
        |row0, rows, data| {
            let block = rows * w;
            let mut channels = data.chunks_exact(block);
            let span = row0..row0 + rows;
            for ch in 0..main_c {
                let values = channels.next().unwrap_or_default();
                main.slice_mut(s![ch, span.clone(), ..]).iter_mut().zip(values).for_each(|(d, &v)| *d = v);
            }
            if let Some(qm) = quality.as_mut() {
                let values = channels.next().unwrap_or_default();
                qm.slice_mut(s![span.clone(), ..]).iter_mut().zip(values).for_each(|(d, &v)| *d = v);
            }
            if let Some(m) = reasons.as_mut() {
                let values = channels.next().unwrap_or_default();
                m.slice_mut(s![span, ..]).iter_mut().zip(values).for_each(|(d, &v)| *d = v.round() as u8);
            }
            Ok(())
        },
        on_tiles,
    )?;
    let invalid = main.iter().filter(|v| v.is_nan()).count();
    let counts = reasons.as_ref().map(|m| {
        let mut counts = [0usize; 5];
        m.iter().for_each(|&c| counts[(c as usize).min(4)] += 1);
        counts
    });
    let output_shape = if main_c == 1 { vec![h, w] } else { vec![main_c, h, w] };
    let stats = InferStats {
        model: model.name(),
        shape: [c, h, w],
        input_type: T::TYPE,
        input_scale: scale,
        precision: model.precision(),
        output_shape,
        overlap: stats.overlap,
        overlap_raised: o.raised,
        stream: stats,
        invalid,
        reasons: counts,
    };
    Ok(ArrayOutput { main, quality, reasons, stats })
}
