// The workgroup sum of the 256-lane reduction kernels, in a fixed tree order (deterministic):
// every lane passes its vec4, every lane gets the four sums. Call from uniform control flow.

const WG: u32 = 256u;

var<workgroup> red: array<vec4<f32>, 256>;

fn wg_sum(li: u32, v: vec4<f32>) -> vec4<f32> {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
