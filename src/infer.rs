//! `psi-gpu infer`: a bucket frame in, a height map (or the model's output channels) out.
//!
//! Read → upload raw → convert and scale on the GPU → model → widen to f32 → read back → write.
//! The whole frame runs as one tile (`--tile 0`).

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::io::npy::{NpyReader, NpyWriter};
use crate::io::weights::Weights;
use crate::nn::unet::UNet;
use crate::ops::convert::{RawBuffer, from_raw, to_f32};
use crate::tensor::{HostType, Tensor};

#[derive(Clone, Debug)]
pub struct InferOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub weights: PathBuf,
    /// Requested precision; `None` = auto (f16 where the device has it).
    pub precision: Option<Precision>,
    /// Overrides the input scale (metadata `input_scale`, else 1/255 for u8, 1/65535 for u16, 1).
    pub input_scale: Option<f32>,
}

/// What a run did, for logs and `--stats-json`.
#[derive(Clone, Debug)]
pub struct InferStats {
    pub seconds: f64,
    pub shape: [usize; 3],
    pub input_type: HostType,
    pub input_scale: f32,
    pub precision: Precision,
    pub output_shape: Vec<usize>,
    /// Bytes the engine allocated on the GPU (weights, activations, staging).
    pub peak_gpu_bytes: u64,
}

/// The scale a frame of `ty` gets: the user's, else the weights' metadata, else the type's default.
pub fn input_scale(user: Option<f32>, metadata: Option<f32>, ty: HostType) -> f32 {
    user.or(metadata).unwrap_or(ty.default_scale())
}

pub fn infer(gpu: &Gpu, opts: &InferOptions) -> Result<InferStats> {
    let t0 = Instant::now();
    let mut reader = NpyReader::open(&opts.input)?;
    let header = reader.header().clone();
    let [c, h, w] = match header.shape[..] {
        [c, h, w] => [c, h, w],
        _ => {
            return Err(Error::Npy {
                path: opts.input.clone(),
                message: format!("expected a (channels, height, width) array, got shape {:?}", header.shape),
            });
        }
    };
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::Npy { path: opts.input.clone(), message: format!("empty frame of shape {:?}", header.shape) });
    }
    let weights = Weights::load(&opts.weights)?;
    let config = UNet::config(&weights)?;
    if config.n_channels != c {
        return Err(Error::Shape(format!(
            "{} has {c} channels but the weights {} expect {}",
            opts.input.display(),
            opts.weights.display(),
            config.n_channels
        )));
    }
    let precision = gpu.resolve_precision(opts.precision)?;
    let model = UNet::new(gpu, &weights, precision)?;
    let scale = input_scale(opts.input_scale, model.input_scale, header.ty);
    let plan = model.plan(gpu, 1, h, w)?;

    let raw = RawBuffer::upload(gpu, header.ty, &reader.read_all()?)?;
    let widen = Tensor::new(gpu, plan.output.shape, Precision::F32, "output f32")?;
    let convert = from_raw(gpu, &raw, scale, &plan.input)?;
    let to32 = to_f32(gpu, &plan.output, 1.0, &widen)?;
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        convert.record(&mut pass);
        plan.record(&mut pass);
        to32.record(&mut pass);
    }
    gpu.queue.submit([enc.finish()]);
    let out = widen.to_f32(gpu)?;

    let output_shape = if config.n_classes == 1 { vec![h, w] } else { vec![config.n_classes, h, w] };
    let mut writer = NpyWriter::new(&opts.output, HostType::F32, &output_shape)?;
    writer.write(bytemuck::cast_slice(&out))?;
    writer.finish()?;
    Ok(InferStats {
        seconds: t0.elapsed().as_secs_f64(),
        shape: [c, h, w],
        input_type: header.ty,
        input_scale: scale,
        precision,
        output_shape,
        peak_gpu_bytes: model.weight_bytes() + plan.bytes + raw.buffer.size() + widen.buffer.size(),
    })
}
