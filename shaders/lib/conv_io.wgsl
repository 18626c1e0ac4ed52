// The parameter block, bindings and epilogue of the 3x3/1x1 convolutions (conv.wgsl,
// conv_winograd.wgsl): input x and output y are channel views (image n, channel c at channel
// coff + c of a tensor with ctot channels), weights wt are vec4 over four output channels, ss
// holds (scale, shift) per output channel.

struct ConvParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    in_ctot: u32,
    in_coff: u32,
    out_ctot: u32,
    out_coff: u32,
    relu: u32,
    oc_tiles: u32,
    affine: u32,      // 1: apply scale/shift (forward); 0: plain convolution (grad_input)
    accumulate: u32,  // 1: add the result into the output instead of overwriting it
    kk: u32,          // taps per kernel: 9 or 1 (relayout, grad_weight reduce)
    strips: u32,      // grad_weight: pixel strips in all
    chunk: u32,       // grad_weight: strips per workgroup; reduce: number of partial sums
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T4>;
@group(0) @binding(3) var<storage, read> ss: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

// y[n, oc, gy, gx] = act(v * scale[oc] + shift[oc]) (plain v without `affine`), added to what it
// holds with `accumulate`.
fn store(n: u32, oc: u32, gy: u32, gx: u32, v: f32) {
    var r = v;
    if (p.affine != 0u) {
        r = r * ss[oc].x + ss[oc].y;
    }
    if (p.relu != 0u) {
        r = max(r, 0.0);
    }
    let i = ((n * p.out_ctot + p.out_coff + oc) * p.h + gy) * p.w + gx;
    if (p.accumulate != 0u) {
        r += f32(y[i]);
    }
    y[i] = T(r);
}
