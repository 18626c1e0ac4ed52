// The workgroup sum of the 256-lane reduction kernels, in a fixed tree order (deterministic):
// every lane passes its vec4, every lane gets the four sums. Call from uniform control flow.

const WG: u32 = 256u;

// The built-in inputs of a 1-D reduction kernel: its element is flat_index(lane.gid, lane.nwg)
// (lib/grid.wgsl), `li` its lane in the workgroup, group_index(lane) the slot of its workgroup's
// partial sums.
struct Lane {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
}

fn group_index(lane: Lane) -> u32 {
    return lane.wid.x + lane.wid.y * lane.nwg.x;
}

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
