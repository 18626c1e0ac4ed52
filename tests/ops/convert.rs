//! The element-wise conversions (`ops::convert`): raw u8/u16/f16/f32 host data to the storage
//! type with a scale and back to f32, against the CPU reference on every adapter and precision,
//! for counts that do not divide the workgroup.

use crate::common::{Rng, assert_close, f32s, f64s, round_to, targets, tol};
use psi_gpu::HostType;
use psi_gpu::gpu::{Precision, Tensor};
use psi_gpu::ops::convert::{self, reference as cpu};

/// Raw bytes of `count` random values of `ty` (finite floats for f16 / f32).
fn random_bytes(rng: &mut Rng, ty: HostType, count: usize) -> Vec<u8> {
    let float = |rng: &mut Rng| rng.uniform(-3.0, 3.0);
    (0..count)
        .flat_map(|_| match ty {
            HostType::U8 => vec![rng.next_u64() as u8],
            HostType::U16 => (rng.next_u64() as u16).to_le_bytes().to_vec(),
            HostType::F16 => half::f16::from_f32(float(rng)).to_le_bytes().to_vec(),
            HostType::F32 => float(rng).to_le_bytes().to_vec(),
        })
        .collect()
}

#[test]
fn convert_from_every_host_type() {
    let mut rng = Rng::new(5);
    for (gpu, p) in targets() {
        for count in [1usize, 3, 5, 1000, 70_001] {
            for ty in [HostType::U8, HostType::U16, HostType::F16, HostType::F32] {
                let bytes = random_bytes(&mut rng, ty, count);
                let scale = ty.default_scale() * 0.5;
                let raw = convert::RawBuffer::upload(gpu, ty, &bytes).unwrap();
                let t = Tensor::new(gpu, [1, 1, 1, count], p, "t").unwrap();
                let back = Tensor::new(gpu, [1, 1, 1, count], Precision::F32, "back").unwrap();
                let d1 = convert::from_raw(gpu, &raw, scale, &t).unwrap();
                let d2 = convert::to_f32(gpu, &t, 2.0, &back).unwrap();
                gpu.run(&[&d1, &d2]).unwrap();
                // The stored values are the scaled raw values rounded to f32, then to the storage type.
                let stored = round_to(p, &f32s(&cpu::from_raw(ty, &bytes, scale as f64)));
                let want = f32s(&cpu::to_f32(&f64s(&stored), 2.0));
                let what = format!("convert {} -> {p} -> f32, {count} values", ty.name());
                assert_close(&back.to_f32(gpu).unwrap(), &want, &tol(Precision::F32), &what);
            }
        }
    }
}
