//! The U-Net against outputs PyTorch computed (tests/fixtures/make_unet_fixtures.py): widths 8
//! and 16, square, odd and wide frames, another channel/class count, on every adapter and
//! precision, on the direct and (forced, and chosen by measuring) the Winograd 3x3 kernel.
//! Tolerances: relative L2 < 1e-4 in f32 (< 1e-5 on the Winograd kernel), < 3e-2 in f16.

use crate::common::{TempPath, fixture, rel_l2, targets};
use psi_gpu::commands::infer::input_scale;
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::weights::Weights;
use psi_gpu::io::{conv_cache, npy};
use psi_gpu::nn::unet::{self, Role, UNet, UNetConfig};
use psi_gpu::ops::conv::select::{Conv, Tuner};
use psi_gpu::ops::convert::{RawBuffer, from_raw};

/// Run `weights` on the u8 `frames` (one batch) and return the output values.
fn run(gpu: &Gpu, p: Precision, weights: &Weights, frames: &[&str]) -> (Vec<usize>, Vec<f32>) {
    run_model(gpu, &UNet::new(gpu, weights, p).unwrap(), frames)
}

/// Run `model` on the u8 `frames` (one batch) and return the output values.
fn run_model(gpu: &Gpu, model: &UNet, frames: &[&str]) -> (Vec<usize>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut shape = Vec::new();
    for f in frames {
        let mut r = npy::NpyReader::open(&fixture(f)).unwrap();
        shape = r.header().shape.clone();
        bytes.extend(r.read_all().unwrap());
    }
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    assert_eq!(c, model.config.n_channels);
    let plan = model.plan(gpu, frames.len(), h, w).unwrap();
    let raw = RawBuffer::upload(gpu, psi_gpu::HostType::U8, &bytes).unwrap();
    let scale = input_scale(None, model.input_scale, psi_gpu::HostType::U8);
    assert!((scale - 1.0 / 255.0).abs() < 1e-9);
    let convert = from_raw(gpu, &raw, scale, &plan.input).unwrap();
    let mut all: Vec<_> = vec![&convert];
    all.extend(&plan.dispatches);
    gpu.run(&all).unwrap();
    (plan.output.shape.to_vec(), plan.output.to_f32(gpu).unwrap())
}

fn limit(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-4,
        Precision::F16 => 3e-2,
    }
}

const CASES: [(&str, &str, &str); 7] = [
    ("unet_b8.safetensors", "frame_64x64.npy", "out_b8_64x64.npy"),
    ("unet_b8.safetensors", "frame_100x75.npy", "out_b8_100x75.npy"),
    ("unet_b8.safetensors", "frame_48x160.npy", "out_b8_48x160.npy"),
    ("unet_b16.safetensors", "frame_64x64.npy", "out_b16_64x64.npy"),
    ("unet_b16.safetensors", "frame_100x75.npy", "out_b16_100x75.npy"),
    ("unet_b16.safetensors", "frame_48x160.npy", "out_b16_48x160.npy"),
    ("unet_b8_c3.safetensors", "frame3_37x50.npy", "out_b8_c3_37x50.npy"),
];

#[test]
fn unet_matches_pytorch() {
    for (gpu, p) in targets() {
        for (w, f, o) in CASES {
            let weights = Weights::load(&fixture(w)).unwrap();
            let (_, want) = npy::read_f32(&fixture(o)).unwrap();
            let (_, got) = run(gpu, p, &weights, &[f]);
            let e = rel_l2(&got, &want);
            eprintln!("{} {p} {w} {f}: relative L2 {e:.2e}", gpu.describe());
            assert!(e < limit(p), "{} {p} {w} {f}: relative L2 {e:e} over {:e}", gpu.describe(), limit(p));
        }
    }
}

/// The Winograd kernel on every 3x3 layer: f32 within 1e-5 of PyTorch, f16 within 3e-2.
#[test]
fn unet_with_winograd_matches_pytorch() {
    for (gpu, p) in targets() {
        for (w, f, o) in CASES {
            let weights = Weights::load(&fixture(w)).unwrap();
            let model = UNet::with_conv(gpu, &weights, p, Conv::Winograd, None).unwrap();
            let (_, want) = npy::read_f32(&fixture(o)).unwrap();
            let (_, got) = run_model(gpu, &model, &[f]);
            let e = rel_l2(&got, &want);
            let limit = if p == Precision::F32 { 1e-5 } else { limit(p) };
            eprintln!("winograd {} {p} {w} {f}: relative L2 {e:.2e}", gpu.describe());
            assert!(e < limit, "winograd {} {p} {w} {f}: relative L2 {e:e} over {limit:e}", gpu.describe());
            assert_eq!(model.winograd_layers(), Some([18, 18]));
        }
    }
}

/// `auto` times both kernels per layer shape, caches the choices on disk and reuses them: a
/// second model with the same cache file measures nothing (the file stays byte for byte), and
/// a corrupt file is replaced, not fatal. Either choice matches PyTorch.
#[test]
fn unet_auto_caches_its_choices() {
    let dir = TempPath::dir("conv-cache");
    let path = dir.0.join("sub").join("conv_choices.json");
    let weights = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    let (_, want) = npy::read_f32(&fixture("out_b8_64x64.npy")).unwrap();
    for (gpu, p) in targets() {
        let _ = std::fs::remove_file(&path);
        let model = UNet::with_conv(gpu, &weights, p, Conv::Auto, Some(Tuner::new(Some(path.clone())))).unwrap();
        let (_, got) = run_model(gpu, &model, &["frame_64x64.npy"]);
        assert!(rel_l2(&got, &want) < limit(p), "auto {} {p}", gpu.describe());
        let [w, all] = model.winograd_layers().unwrap();
        assert!(w <= all && all == 18);
        let cached = std::fs::read(&path).unwrap();
        let choices = conv_cache::read(&path).unwrap();
        // Distinct layer shapes of base 8 at 64 x 64: 13 (inc.1 and up4.1 share one, and so on).
        assert!(choices.len() >= 10 && choices.len() < 18, "{choices:?}");
        for c in &choices {
            assert_eq!(
                (&c.key.adapter, &c.key.driver, &c.key.precision),
                (&gpu.info.name, &gpu.info.driver, &p.to_string())
            );
            assert!(["direct", "winograd"].contains(&c.kernel.as_str()) && c.seconds.len() == 2);
        }
        assert!(choices.iter().any(|c| c.key.shape == [1, 8, 8, 64, 64]), "{choices:?}");
        let again = UNet::with_conv(gpu, &weights, p, Conv::Auto, Some(Tuner::new(Some(path.clone())))).unwrap();
        again.plan(gpu, 1, 64, 64).unwrap();
        assert_eq!(again.winograd_layers(), model.winograd_layers());
        assert_eq!(std::fs::read(&path).unwrap(), cached, "the second model measured again");
        std::fs::write(&path, b"{ not json").unwrap();
        let fresh = UNet::with_conv(gpu, &weights, p, Conv::Auto, Some(Tuner::new(Some(path.clone())))).unwrap();
        fresh.plan(gpu, 1, 64, 64).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("psi-gpu conv choices"));
    }
}

#[test]
fn batch_of_two_equals_two_runs() {
    let weights = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    let (gpu, p) = targets()[0];
    let (shape, both) = run(gpu, p, &weights, &["frame_64x64.npy", "frame_64x64.npy"]);
    assert_eq!(shape, vec![2, 1, 64, 64]);
    let (_, want) = npy::read_f32(&fixture("out_b8_64x64.npy")).unwrap();
    let (a, b) = both.split_at(64 * 64);
    assert!(rel_l2(a, &want) < limit(p) && rel_l2(b, &want) < limit(p));
}

#[test]
fn config_is_read_from_shapes_and_metadata() {
    let (gpu, _) = targets()[0];
    let w = Weights::load(&fixture("unet_b8_c3.safetensors")).unwrap();
    assert_eq!(UNet::config(&w).unwrap(), UNetConfig { n_channels: 3, n_classes: 2, base: 8 });
    assert_eq!(UNet::new(gpu, &w, Precision::F32).unwrap().input_scale, None);
    let w16 = Weights::load(&fixture("unet_b16.safetensors")).unwrap();
    assert_eq!(UNet::config(&w16).unwrap(), UNetConfig { n_channels: 16, n_classes: 1, base: 16 });
    let scale = UNet::new(gpu, &w16, Precision::F32).unwrap().input_scale.unwrap();
    assert!((scale - 1.0 / 255.0).abs() < 1e-9);
    // The user's scale wins over metadata, metadata over the dtype's default.
    assert_eq!(input_scale(Some(0.5), Some(0.25), psi_gpu::HostType::U8), 0.5);
    assert_eq!(input_scale(None, Some(0.25), psi_gpu::HostType::U8), 0.25);
    assert_eq!(input_scale(None, None, psi_gpu::HostType::U16), 1.0 / 65535.0);
    assert_eq!(input_scale(None, None, psi_gpu::HostType::F32), 1.0);
}

#[test]
fn too_small_frames_are_rejected() {
    let (gpu, p) = targets()[0];
    let w = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    let model = UNet::new(gpu, &w, p).unwrap();
    let err = model.plan(gpu, 1, 15, 64).err().expect("15 rows must be rejected").to_string();
    assert!(err.contains("at least 16 x 16"), "{err}");
}

/// The architecture table names every floating tensor of PyTorch's state_dict with its shape
/// (three widths and channel counts), and its levels follow the U-Net: encoder block `l` and
/// decoder block `8 - l` at level `l`, each decoder reading the concatenation of its level.
#[test]
fn architecture_table_matches_the_pytorch_state_dicts() {
    for name in ["unet_b8.safetensors", "unet_b16.safetensors", "unet_b8_c3.safetensors"] {
        let w = Weights::load(&fixture(name)).unwrap();
        let config = UNet::config(&w).unwrap();
        let specs = unet::state_dict(&config);
        let got: Vec<(&str, &[usize])> = specs.iter().map(|t| (t.name.as_str(), t.shape.as_slice())).collect();
        let mut want: Vec<(&str, &[usize])> = w.tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice())).collect();
        let mut sorted = got.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want, "{name}");
        let parameters = specs.iter().filter(|t| t.role.is_parameter()).count();
        assert_eq!(parameters, specs.len() - 2 * 18, "{name}: two running statistics per BatchNorm");
        for t in &specs {
            let suffix = match t.role {
                Role::ConvWeight | Role::BnWeight => ".weight",
                Role::ConvBias | Role::BnBias => ".bias",
                Role::RunningMean => ".running_mean",
                Role::RunningVar => ".running_var",
            };
            assert!(t.name.ends_with(suffix), "{name}: {} as {:?}", t.name, t.role);
            assert_eq!(t.shape.len() == 4, t.role == Role::ConvWeight, "{name}: {}", t.name);
        }
        let blocks = unet::blocks(&config);
        let c = unet::widths(config.base);
        assert_eq!(blocks.len(), 9);
        for (l, block) in blocks[..5].iter().enumerate() {
            assert!(block.iter().all(|layer| layer.level == l), "{name}: encoder block {l}");
            assert!(block[0].conv.starts_with(if l == 0 { "inc" } else { "down" }));
        }
        for l in 0..4 {
            let up = &blocks[8 - l];
            assert!(up.iter().all(|layer| layer.level == l), "{name}: decoder block at level {l}");
            assert_eq!(up[0].cin, 2 * c[l], "{name}: up block at level {l} reads [skip, upsampled]");
            assert_eq!(up[1].cout, if l == 0 { config.base } else { c[l - 1] });
        }
    }
}
