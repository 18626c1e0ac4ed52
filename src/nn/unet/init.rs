//! A fresh state_dict of the seed U-Net (see [`crate::nn::unet`]), for training from scratch.
//!
//! Conv weights are He-normal (std = sqrt(2 / fan_in), fan_in = cin * k * k), BatchNorm starts at
//! weight 1, bias 0, running_mean 0, running_var 1, and the 1x1 head's bias is 0. The Gaussian
//! draws come from a splitmix64 stream and Box–Muller, so a seed gives the same weights everywhere.

use crate::rng::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::io::weights::{HostTensor, Weights};

/// A fresh state_dict of `UNet(n_channels, n_classes, base)` in the order PyTorch's
/// `UNet.state_dict()` lists it (without the integer `num_batches_tracked` buffers, which
/// [`crate::io::checkpoint::save`] adds). Deterministic in `seed`.
pub fn he_init(n_channels: usize, n_classes: usize, base: usize, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let b = base;
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut conv = |out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, name: String, cout: usize, cin: usize, k: usize| {
        let fan_in = cin * k * k;
        let std = if fan_in == 0 { 0.0 } else { (2.0 / fan_in as f64).sqrt() };
        let data = (0..cout * fan_in).map(|_| (rng.normal() * std) as f32).collect();
        out.push((name, vec![cout, cin, k, k], data));
    };
    let bn = |out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, c: usize| {
        for (stat, value) in [("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)] {
            out.push((format!("{prefix}.{stat}"), vec![c], vec![value; c]));
        }
    };
    let mut double_conv = |out: &mut Vec<_>, prefix: &str, cin: usize, mid: usize, cout: usize| {
        let d = format!("{prefix}.double_conv");
        conv(out, format!("{d}.0.weight"), mid, cin, 3);
        bn(out, &format!("{d}.1"), mid);
        conv(out, format!("{d}.3.weight"), cout, mid, 3);
        bn(out, &format!("{d}.4"), cout);
    };
    double_conv(&mut out, "inc", n_channels, b, b);
    let widths = [b, 2 * b, 4 * b, 8 * b, 8 * b];
    for i in 1..=4 {
        let (cin, cout) = (widths[i - 1], widths[i]);
        double_conv(&mut out, &format!("down{i}.maxpool_conv.1"), cin, cout, cout);
    }
    for (i, (cin, cout)) in [(16 * b, 4 * b), (8 * b, 2 * b), (4 * b, b), (2 * b, b)].into_iter().enumerate() {
        double_conv(&mut out, &format!("up{}.conv", i + 1), cin, cin / 2, cout);
    }
    conv(&mut out, "outc.conv.weight".into(), n_classes, b, 1);
    out.push(("outc.conv.bias".into(), vec![n_classes], vec![0.0; n_classes]));
    out
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
    let mut other = Vec::new();
    for (name, shape, data) in state {
        let shape = if shape.iter().product::<usize>() == data.len() { shape.clone() } else { vec![data.len()] };
        tensors.insert(name.clone(), HostTensor { shape, data: data.clone() });
        if let Some(prefix) = name.strip_suffix(".running_var") {
            let nbt = format!("{prefix}.num_batches_tracked");
            if !other.contains(&nbt) {
                other.push(nbt);
            }
        }
    }
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    Weights { path: PathBuf::from("<memory>"), tensors, other, metadata }
}
