//! The in-memory region runner (`tiling::region`) against `infer --tile 0` on the same crop
//! written to a file: the same bytes, for the U-Net in f32 and f16 and for the classical solver
//! (heights and quality) on frames of every host type, from views that are not contiguous.

use half::f16;
use ndarray::{Array3, ArrayView3, s};
use psi_gpu::HostType;
use psi_gpu::commands::infer::{InferOptions, infer};
use psi_gpu::gpu::{Gpu, Precision};
use psi_gpu::io::npy::{self, NpyReader, NpyWriter};
use psi_gpu::io::weights::Weights;
use psi_gpu::nn::Model;
use psi_gpu::nn::classical::Classical;
use psi_gpu::nn::unet::UNet;
use psi_gpu::ops::classical::ClassicalConfig;
use psi_gpu::tiling::region::{self, HostElement};

use crate::common::{TempPath, fixture, gpus, targets};

/// A u8 `(C, H, W)` fixture frame.
fn u8_frame(name: &str) -> Array3<u8> {
    let mut r = NpyReader::open(&fixture(name)).unwrap();
    assert_eq!(r.header().ty, HostType::U8, "{name}");
    let [c, h, w] = r.header().shape[..] else { panic!("{name}: not (C, H, W)") };
    Array3::from_shape_vec((c, h, w), r.read_all().unwrap()).unwrap()
}

/// `infer --tile 0` on `crop` (written as a C-order npy of its type): each output file's values.
fn infer_whole<T: HostElement + bytemuck::Pod>(
    gpu: &Gpu,
    crop: ArrayView3<T>,
    weights: Option<&str>,
    precision: Precision,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let dir = TempPath::dir("region");
    let (input, output, quality) = (dir.join("crop.npy"), dir.join("h.npy"), dir.join("q.npy"));
    let (c, h, w) = crop.dim();
    let owned = crop.as_standard_layout();
    let mut wr = NpyWriter::new(&input, T::TYPE, &[c, h, w]).unwrap();
    wr.write(bytemuck::cast_slice(owned.as_slice().unwrap())).unwrap();
    wr.finish().unwrap();
    let mut opts = InferOptions::new(input, output.clone());
    opts.tile = 0;
    opts.precision = Some(precision);
    opts.weights = weights.map(fixture);
    opts.quality = weights.is_none().then(|| quality.clone());
    infer(gpu, &opts, |_, _| {}).unwrap();
    let heights = npy::read_f32(&output).unwrap().1;
    (heights, weights.is_none().then(|| npy::read_f32(&quality).unwrap().1))
}

fn bits(v: impl IntoIterator<Item = f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

#[test]
fn unet_on_a_region_equals_infer_of_the_crop_in_f32_and_f16() {
    let full = u8_frame("frame_64x64.npy");
    let weights = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    // Odd sizes, and a view into the whole frame (strided, not contiguous).
    let view = full.slice(s![.., 5..45, 9..46]);
    for (gpu, precision) in targets() {
        let model = Model::UNet(UNet::new(gpu, &weights, precision).unwrap());
        let got = region::run(gpu, &model, view, None).unwrap();
        assert_eq!(got.dim(), (1, 40, 37));
        let (want, _) = infer_whole(gpu, view, Some("unet_b8.safetensors"), precision);
        let what = format!("{} {precision}", gpu.describe());
        assert_eq!(bits(got.iter().copied()), bits(want.iter().copied()), "{what}");
        let heights = region::heights(gpu, &model, view, None).unwrap();
        assert_eq!(heights.dim(), (40, 37));
        assert_eq!(bits(heights), bits(want), "{what}: heights");
        // The input scale: 1/255 for u8 by default, so an explicit 1/255 changes nothing and 1/128 does.
        let same = region::run(gpu, &model, view, Some(1.0 / 255.0)).unwrap();
        assert_eq!(bits(same.iter().copied()), bits(got.iter().copied()), "{what}: scale 1/255");
        let other = region::run(gpu, &model, view, Some(1.0 / 128.0)).unwrap();
        assert_ne!(bits(other), bits(got), "{what}: scale 1/128");
    }
}

/// The classical solver (heights and quality) on one region of `full`, converted to `T`.
fn check_classical<T: HostElement + bytemuck::Pod>(gpu: &Gpu, full: &Array3<u8>, convert: impl Fn(u8) -> T) {
    let frame = full.mapv(convert);
    let view = frame.slice(s![.., 10..43, 20..67]);
    let model = Model::Classical(Classical::new(gpu, ClassicalConfig { quality: true, ..Default::default() }).unwrap());
    let got = region::run(gpu, &model, view, None).unwrap();
    assert_eq!(got.dim(), (2, 33, 47));
    let (heights, quality) = infer_whole(gpu, view, None, Precision::F32);
    let what = format!("{} {:?}", gpu.describe(), T::TYPE);
    assert_eq!(bits(got.slice(s![0, .., ..]).iter().copied()), bits(heights), "{what}: heights");
    assert_eq!(bits(got.slice(s![1, .., ..]).iter().copied()), bits(quality.unwrap()), "{what}: quality");
}

#[test]
fn classical_on_a_region_equals_infer_of_the_crop_for_every_host_type() {
    let full = u8_frame("psi_frame_96x128.npy");
    for gpu in gpus() {
        check_classical(gpu, &full, |v| v);
        check_classical(gpu, &full, |v| u16::from(v) * 257);
        check_classical(gpu, &full, |v| f16::from_f32(f32::from(v)));
        check_classical(gpu, &full, f32::from);
    }
}

#[test]
fn a_frame_the_model_cannot_take_is_an_error() {
    let gpu = &gpus()[0];
    let model = Model::Classical(Classical::new(gpu, ClassicalConfig::default()).unwrap());
    let three = Array3::<f32>::zeros((3, 8, 8));
    let e = region::run(gpu, &model, three.view(), None).unwrap_err().to_string();
    assert!(e.contains("3 channels") && e.contains("expects 16"), "{e}");
    let empty = Array3::<u8>::zeros((16, 0, 8));
    assert!(region::run(gpu, &model, empty.view(), None).is_err());
    let bytes = vec![0u8; 16 * 8 * 8];
    let e = region::run_raw(gpu, &model, HostType::U16, [16, 8, 8], &bytes, None).unwrap_err().to_string();
    assert!(e.contains("bytes"), "{e}");
}
