// Adam on f32 master weights, with the loss scaler's inf check and gradient clipping
// (see src/ops/adam.rs). Every tensor works on a flat packed buffer of all parameters as vec4
// (the host pads the length to a multiple of 64 elements); grads, m and v share its layout.
//
//   fill          words[i] = p.fill for i < p.count (zero_grad; resetting found_inf)
//   check         found_inf[0] |= 1 if any grad · (1/scale) is inf or NaN
//   norm_partial  per-workgroup Σ (grad / scale)² (lib/reduce.wgsl's fixed tree: deterministic)
//   norm_finish   one workgroup: norm = sqrt(Σ partials), clip[0] = norm,
//                 clip[1] = min(1, max_norm / (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_)
//   adam_step     skipped entirely when found_inf[0] != 0 (GradScaler skips optimizer.step); else
//                 as torch.optim.Adam (L2 weight decay, not AdamW):
//                   g = grad / scale · (clip[1] if clipping)
//                   g += weight_decay · param
//                   m = lerp(m, g, 1 − β1);  v = β2·v + (1 − β2)·g²
//                   param −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
//                 with bc1 = 1 − β1^t, bc2 = 1 − β2^t computed by the host in f64 for the step
//                 count t of applied steps. The gradients are not modified.
//
// The `T` alias of the prelude is unused: master weights, grads and moments are f32.

struct AdamParams {
    // vec4 elements (fill: u32 words).
    count: u32,
    // 1: multiply the gradient by clip[1].
    clip: u32,
    // Partial sums (norm_finish).
    partials: u32,
    // Word written by `fill`.
    fill: u32,
    // lr / bc1.
    step_size: f32,
    // sqrt(bc2).
    bc2_sqrt: f32,
    // Weight of torch's lerp(m, g, weight) = 1 − β1.
    lerp_w: f32,
    beta2: f32,
    // 1 − β2.
    beta2_c: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
}

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> m2: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<storage, read_write> found_inf: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
@group(0) @binding(8) var<storage, read_write> words: array<u32>;
@group(0) @binding(9) var<storage, read_write> clip: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.count) {
        words[i] = p.fill;
    }
}

@compute @workgroup_size(256, 1, 1)
fn check(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.count) {
        return;
    }
    let g = grads[i] * (1.0 / scale[0]);
    // Inf and NaN have an all-ones exponent; tested on the bits (no isinf/isnan in WGSL).
    let e = bitcast<vec4<u32>>(g) & vec4<u32>(0x7f800000u);
    if (any(e == vec4<u32>(0x7f800000u))) {
        atomicOr(&found_inf[0], 1u);
    }
}

@compute @workgroup_size(256, 1, 1)
fn norm_partial(lane: Lane) {
    let i = flat_index(lane.gid, lane.nwg);
    var s = 0.0;
    if (i < p.count) {
        let g = grads[i] * (1.0 / scale[0]);
        s = dot(g, g);
    }
    let total = wg_sum(lane.li, vec4<f32>(s, 0.0, 0.0, 0.0)).x;
    if (lane.li == 0u) {
        partials[group_index(lane)] = total;
    }
}

@compute @workgroup_size(256, 1, 1)
fn norm_finish(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var j = li; j < p.partials; j += WG) {
        s += partials[j];
    }
    let total = wg_sum(li, vec4<f32>(s, 0.0, 0.0, 0.0)).x;
    if (li == 0u) {
        let norm = sqrt(total);
        clip[0] = norm;
        clip[1] = min(1.0, p.max_norm / (norm + 1e-6));
    }
}

@compute @workgroup_size(256, 1, 1)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.count || atomicLoad(&found_inf[0]) != 0u) {
        return;
    }
    var g = grads[i] * (1.0 / scale[0]);
    if (p.clip != 0u) {
        g = g * clip[1];
    }
    let w = param[i];
    if (p.weight_decay != 0.0) {
        g = g + p.weight_decay * w;
    }
    // torch.lerp: self + w·(end − self) for |w| < 0.5, else end − (end − self)·(1 − w).
    var m = m1[i];
    if (abs(p.lerp_w) < 0.5) {
        m = m + p.lerp_w * (g - m);
    } else {
        m = g - (g - m) * (1.0 - p.lerp_w);
    }
    let v = m2[i] * p.beta2 + p.beta2_c * (g * g);
    let denom = sqrt(v) / p.bc2_sqrt + p.eps;
    param[i] = w - p.step_size * (m / denom);
    m1[i] = m;
    m2[i] = v;
}
