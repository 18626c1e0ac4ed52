// The flat index of an invocation of a 1-D kernel of 256 lanes whose workgroups are folded into
// (x, y), so that no dimension exceeds the adapter's limit (gpu::grid_1d).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}
