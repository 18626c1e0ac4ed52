//! Every kernel against its CPU reference (`psi_gpu::ops::reference`), on random shapes with odd
//! sizes, 1-pixel edges, channel counts that are not multiples of 4 and sizes that do not divide
//! the workgroup, through channel views (offsets into larger tensors), on every adapter and in
//! every precision the adapter has.

use crate::common::{Rng, assert_close, round_to, targets, tol};
use psi_gpu::HostType;
use psi_gpu::gpu::Precision;
use psi_gpu::gpu::Tensor;
use psi_gpu::ops::{conv, convert, pool, upsample};

/// Extract channels [off, off + c) of every image of an NCHW host tensor.
fn slice_channels(v: &[f32], [n, ct, h, w]: [usize; 4], off: usize, c: usize) -> Vec<f32> {
    let hw = h * w;
    (0..n).flat_map(|i| v[(i * ct + off) * hw..(i * ct + off + c) * hw].to_vec()).collect()
}

#[test]
fn conv_matches_reference() {
    // (n, cin, cout, h, w, k)
    let shapes = [
        (1, 3, 5, 7, 9, 3),
        (2, 8, 16, 8, 32, 3),
        (1, 13, 19, 33, 35, 3),
        (1, 1, 1, 1, 1, 3),
        (1, 5, 3, 1, 40, 3),
        (1, 6, 7, 37, 1, 3),
        (1, 17, 33, 16, 16, 3),
        (2, 9, 6, 11, 13, 1),
        (1, 16, 1, 20, 21, 1),
    ];
    let mut rng = Rng::new(1);
    for (gpu, p) in targets() {
        for &(n, cin, cout, h, w, k) in &shapes {
            // Read from channels [2, 2 + cin) of a wider tensor; write into channels [1, 1 + cout).
            let (ict, oct) = (cin + 3, cout + 2);
            let x_all = round_to(p, &rng.vec(n * ict * h * w, -1.0, 1.0));
            let wt = round_to(p, &rng.vec(cout * cin * k * k, -0.5, 0.5));
            let scale = rng.vec(cout, 0.5, 1.5);
            let shift = rng.vec(cout, -0.2, 0.2);
            for relu in [false, true] {
                let x = Tensor::from_f32(gpu, [n, ict, h, w], p, &x_all).unwrap();
                let y = Tensor::from_f32(gpu, [n, oct, h, w], p, &vec![7.0; n * oct * h * w]).unwrap();
                let cw = conv::ConvWeights::new(gpu, p, &wt, [cout, cin, k], &scale, &shift, relu).unwrap();
                let d = conv::conv(gpu, &cw, x.channels(2, cin), y.channels(1, cout)).unwrap();
                gpu.run(&[&d]).unwrap();
                let got = y.to_f32(gpu).unwrap();
                let xin = slice_channels(&x_all, [n, ict, h, w], 2, cin);
                let want = conv::reference::conv2d(&xin, [n, cin, h, w], &wt, cout, k, &scale, &shift, relu);
                let what = format!("conv{k}x{k} {} {p} n{n} {cin}->{cout} {h}x{w} relu={relu}", gpu.describe());
                assert_close(&slice_channels(&got, [n, oct, h, w], 1, cout), &want, &tol(p), &what);
                // Channels outside the view are untouched.
                assert!(
                    slice_channels(&got, [n, oct, h, w], 0, 1).iter().all(|&v| v == 7.0),
                    "{what}: wrote outside view"
                );
                assert!(
                    slice_channels(&got, [n, oct, h, w], 1 + cout, 1).iter().all(|&v| v == 7.0),
                    "{what}: wrote outside view"
                );
            }
        }
    }
}

#[test]
fn naive_conv_matches_reference() {
    let mut rng = Rng::new(2);
    let (n, cin, cout, h, w) = (1, 5, 6, 9, 11);
    for (gpu, p) in targets() {
        let x = round_to(p, &rng.vec(n * cin * h * w, -1.0, 1.0));
        let wt = round_to(p, &rng.vec(cout * cin * 9, -0.5, 0.5));
        let (scale, shift) = (vec![1.0; cout], vec![0.0; cout]);
        let xt = Tensor::from_f32(gpu, [n, cin, h, w], p, &x).unwrap();
        let yt = Tensor::new(gpu, [n, cout, h, w], p, "y").unwrap();
        let cw = conv::ConvWeights::new(gpu, p, &wt, [cout, cin, 3], &scale, &shift, false).unwrap();
        gpu.run(&[&conv::conv3x3_naive(gpu, &cw, xt.view(), yt.view()).unwrap()]).unwrap();
        let want = conv::reference::conv2d(&x, [n, cin, h, w], &wt, cout, 3, &scale, &shift, false);
        assert_close(&yt.to_f32(gpu).unwrap(), &want, &tol(p), "naive conv");
    }
}

#[test]
fn maxpool_matches_reference() {
    let mut rng = Rng::new(3);
    for (gpu, p) in targets() {
        for &(n, c, h, w) in &[(1, 3, 7, 9), (2, 5, 16, 16), (1, 1, 2, 2), (1, 4, 3, 65), (1, 2, 1, 9)] {
            let ct = c + 2;
            let x_all = round_to(p, &rng.vec(n * ct * h * w, -2.0, 2.0));
            let x = Tensor::from_f32(gpu, [n, ct, h, w], p, &x_all).unwrap();
            let y = Tensor::new(gpu, [n, c, h / 2, w / 2], p, "y").unwrap();
            gpu.run(&[&pool::maxpool2x2(gpu, x.channels(1, c), y.view()).unwrap()]).unwrap();
            let want = pool::reference::maxpool2x2(&slice_channels(&x_all, [n, ct, h, w], 1, c), [n, c, h, w]);
            assert_close(&y.to_f32(gpu).unwrap(), &want, &tol(p), &format!("maxpool {p} {n}x{c}x{h}x{w}"));
        }
    }
}

#[test]
fn maxpool_rejects_wrong_output() {
    let (gpu, p) = targets()[0];
    let x = Tensor::new(gpu, [1, 2, 8, 8], p, "x").unwrap();
    let y = Tensor::new(gpu, [1, 2, 5, 4], p, "y").unwrap();
    assert!(pool::maxpool2x2(gpu, x.view(), y.view()).is_err());
}

#[test]
fn upsample_pad_matches_reference() {
    let mut rng = Rng::new(4);
    // (n, c, h, w, out_h, out_w): exact, +1 pads (odd skips), 1-pixel inputs, +3 pads, crops.
    let cases =
        [(1, 3, 4, 5, 8, 10), (2, 2, 7, 3, 15, 7), (1, 1, 1, 1, 2, 3), (1, 5, 6, 6, 15, 12), (1, 2, 5, 4, 9, 6)];
    for (gpu, p) in targets() {
        for &(n, c, h, w, oh, ow) in &cases {
            let x = round_to(p, &rng.vec(n * c * h * w, -1.0, 1.0));
            let xt = Tensor::from_f32(gpu, [n, c, h, w], p, &x).unwrap();
            // Write into channels [1, 1 + c) of a (c + 1)-channel concat buffer.
            let yt = Tensor::from_f32(gpu, [n, c + 1, oh, ow], p, &vec![5.0; n * (c + 1) * oh * ow]).unwrap();
            gpu.run(&[&upsample::upsample2x_pad(gpu, xt.view(), yt.channels(1, c)).unwrap()]).unwrap();
            let got = yt.to_f32(gpu).unwrap();
            let want = upsample::reference::upsample2x_pad(&x, [n, c, h, w], oh, ow);
            let what = format!("upsample {p} {n}x{c}x{h}x{w} -> {oh}x{ow}");
            assert_close(&slice_channels(&got, [n, c + 1, oh, ow], 1, c), &want, &tol(p), &what);
            assert!(
                slice_channels(&got, [n, c + 1, oh, ow], 0, 1).iter().all(|&v| v == 5.0),
                "{what}: wrote outside view"
            );
        }
    }
}

#[test]
fn convert_from_every_host_type() {
    let mut rng = Rng::new(5);
    for (gpu, p) in targets() {
        for count in [1usize, 3, 5, 1000, 70_001] {
            let ints: Vec<u32> = (0..count).map(|_| rng.next_u64() as u32).collect();
            let floats = rng.vec(count, -3.0, 3.0);
            let cases: Vec<(HostType, Vec<u8>, Vec<f32>)> = vec![
                (
                    HostType::U8,
                    ints.iter().map(|&v| v as u8).collect(),
                    ints.iter().map(|&v| (v as u8) as f32).collect(),
                ),
                (
                    HostType::U16,
                    ints.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
                    ints.iter().map(|&v| (v as u16) as f32).collect(),
                ),
                (
                    HostType::F16,
                    floats.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    floats.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                ),
                (HostType::F32, floats.iter().flat_map(|v| v.to_le_bytes()).collect(), floats.clone()),
            ];
            for (ty, bytes, values) in cases {
                let scale = ty.default_scale() * 0.5;
                let raw = convert::RawBuffer::upload(gpu, ty, &bytes).unwrap();
                let t = Tensor::new(gpu, [1, 1, 1, count], p, "t").unwrap();
                let back = Tensor::new(gpu, [1, 1, 1, count], Precision::F32, "back").unwrap();
                let d1 = convert::from_raw(gpu, &raw, scale, &t).unwrap();
                let d2 = convert::to_f32(gpu, &t, 2.0, &back).unwrap();
                gpu.run(&[&d1, &d2]).unwrap();
                let want: Vec<f32> = values.iter().map(|v| round_to(p, &[v * scale])[0] * 2.0).collect();
                let what = format!("convert {} -> {p} -> f32, {count} values", ty.name());
                assert_close(&back.to_f32(gpu).unwrap(), &want, &tol(Precision::F32), &what);
            }
        }
    }
}
