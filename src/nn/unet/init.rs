//! A fresh state_dict of the seed U-Net (see [`crate::nn::unet`]), for training from scratch.
//!
//! Conv weights are He-normal (std = sqrt(2 / fan_in), fan_in = cin * k * k), BatchNorm starts at
//! weight 1, bias 0, running_mean 0, running_var 1, and the 1x1 head's bias is 0. The Gaussian
//! draws come from a splitmix64 stream and Box–Muller, so a seed gives the same weights everywhere.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::io::weights::{Dtype, HostTensor, Weights};
use crate::nn::unet::{Role, UNetConfig, state_dict};
use crate::rng::Rng;

/// A fresh state_dict of `UNet(n_channels, n_classes, base)` in the order PyTorch's
/// `UNet.state_dict()` lists it ([`state_dict`]; without the integer `num_batches_tracked`
/// buffers, which [`crate::io::checkpoint::save`] adds). Deterministic in `seed`: the draws go to
/// the convolution weights in that order.
pub fn he_init(n_channels: usize, n_classes: usize, base: usize, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    let config = UNetConfig { n_channels, n_classes, base };
    let init = |role: Role, shape: &[usize], rng: &mut Rng| -> Vec<f32> {
        let len = shape.iter().product();
        match role {
            Role::ConvWeight => {
                let fan_in: usize = shape[1..].iter().product();
                let std = if fan_in == 0 { 0.0 } else { (2.0 / fan_in as f64).sqrt() };
                (0..len).map(|_| (rng.normal() * std) as f32).collect()
            }
            Role::BnWeight | Role::RunningVar => vec![1.0; len],
            Role::BnBias | Role::RunningMean | Role::ConvBias => vec![0.0; len],
        }
    };
    state_dict(&config)
        .into_iter()
        .map(|t| {
            let data = init(t.role, &t.shape, &mut rng);
            (t.name, t.shape, data)
        })
        .collect()
}

/// An in-memory [`Weights`] (path `<memory>`) from a state_dict such as [`he_init`]'s or a
/// trainer's, so that `UNet::new` can load it without a file. Every `<bn>.running_var` also
/// lists `<bn>.num_batches_tracked` in `other`, as a file written by
/// [`crate::io::checkpoint::save`] would. A later duplicate name replaces an earlier one. An
/// entry whose data length does not match its shape is kept with the flat shape `[len]`, so
/// that [`Weights::get`] reports the mismatch instead of anything reading past the data.
pub fn to_weights<K: Into<String>, V: Into<String>>(
    state: &[(String, Vec<usize>, Vec<f32>)],
    metadata: impl IntoIterator<Item = (K, V)>,
) -> Weights {
    let mut tensors = BTreeMap::new();
    let mut other = BTreeMap::new();
    for (name, shape, data) in state {
        let shape = if shape.iter().product::<usize>() == data.len() { shape.clone() } else { vec![data.len()] };
        tensors.insert(name.clone(), HostTensor { shape, data: data.clone() });
        if let Some(prefix) = name.strip_suffix(".running_var") {
            other.insert(format!("{prefix}.num_batches_tracked"), Dtype::I64);
        }
    }
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    Weights { path: PathBuf::from("<memory>"), tensors, other, metadata }
}
