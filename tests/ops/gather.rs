//! The tile gather (`ops::gather`): tiles cut from a raw block of frame rows of every host type,
//! converted and scaled, against the CPU reference on every adapter and precision, with a batch
//! that fills fewer slots than the model input has (the rest must stay untouched).

use crate::common::{Rng, assert_close, f32s, f64s, round_to, targets, tol};
use psi_gpu::HostType;
use psi_gpu::gpu::{Tensor, storage};
use psi_gpu::io::npy;
use psi_gpu::ops::gather::{GatherParams, gather, reference as cpu};
use psi_gpu::ops::host_type_code;

/// `count` random raw values of `ty` (finite floats for f16 / f32).
fn raw_values(rng: &mut Rng, ty: HostType, count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|_| match ty {
            HostType::U8 => vec![rng.next_u64() as u8],
            HostType::U16 => (rng.next_u64() as u16).to_le_bytes().to_vec(),
            HostType::F16 => half::f16::from_f32(rng.uniform(-3.0, 3.0)).to_le_bytes().to_vec(),
            HostType::F32 => rng.uniform(-3.0, 3.0).to_le_bytes().to_vec(),
        })
        .collect()
}

#[test]
fn gather_matches_reference() {
    let mut rng = Rng::new(21);
    // (channels, tile rows, tile columns, block columns, tile columns in the block, model slots)
    let cases = [(3, 5, 7, 19, vec![0, 6, 12], 4), (1, 17, 16, 16, vec![0], 1), (2, 1, 300, 301, vec![1, 0], 3)];
    for (gpu, p) in targets() {
        for (c, th, tw, bw, cols, slots) in &cases {
            let (c, th, tw, bw, slots) = (*c, *th, *tw, *bw, *slots);
            for ty in [HostType::U8, HostType::U16, HostType::F16, HostType::F32] {
                let bytes = raw_values(&mut rng, ty, c * th * bw);
                let descriptors: Vec<[u32; 4]> = cols.iter().map(|&x| [0, 0, x, 0]).collect();
                let scale = ty.default_scale() * 0.5;
                let params = GatherParams {
                    c: c as u32,
                    th: th as u32,
                    tw: tw as u32,
                    bw: bw as u32,
                    count: cols.len() as u32,
                    scale,
                    kind: host_type_code(ty),
                    _pad: 0,
                };
                let block = storage(gpu, "block", &bytes).unwrap();
                let tiles = storage(gpu, "tiles", bytemuck::cast_slice(&descriptors)).unwrap();
                let fill = vec![7.0; slots * c * th * tw];
                let out = Tensor::from_f32(gpu, [slots, c, th, tw], p, &fill).unwrap();
                gpu.run(&[&gather(gpu, &block, &tiles, &params, &out).unwrap()]).unwrap();
                let got = out.to_f32(gpu).unwrap();
                let values = f64s(&npy::to_f32(ty, &bytes));
                let want = round_to(p, &f32s(&cpu::gather(&values, [c, th, bw], &descriptors, tw, scale as f64)));
                let what = format!("gather {} {p} {} {c}x{th}x{tw} from {bw} columns", gpu.describe(), ty.name());
                let (real, rest) = got.split_at(want.len());
                assert_close(real, &want, &tol(p), &what);
                assert!(rest.iter().all(|&v| v == 7.0), "{what}: wrote past the batch's {} tiles", cols.len());
            }
        }
    }
}

#[test]
fn gather_rejects_mismatched_parameters() {
    let (gpu, p) = targets()[0];
    let block = storage(gpu, "block", &[0u8; 64]).unwrap();
    let tiles = storage(gpu, "tiles", &[0u8; 16]).unwrap();
    let out = Tensor::new(gpu, [1, 2, 3, 4], p, "out").unwrap();
    let params = GatherParams { c: 2, th: 3, tw: 4, bw: 4, count: 1, scale: 1.0, kind: 0, _pad: 0 };
    assert!(gather(gpu, &block, &tiles, &params, &out).is_ok());
    assert!(gather(gpu, &block, &tiles, &GatherParams { kind: 4, ..params }, &out).is_err());
    assert!(gather(gpu, &block, &tiles, &GatherParams { tw: 5, ..params }, &out).is_err());
}
