// The flat index of an invocation of a 1-D kernel of 256 lanes whose workgroups are folded into
// (x, y), so that no dimension exceeds the adapter's limit (gpu::grid_1d).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Plane z = n · channels + c of a kernel over the (image, channel) planes of a batch, in a channel
// view of `channels` channels at offset `coff` of a tensor with `ctot`: the plane's index in the
// tensor (its first element is at that times the plane size).
fn view_plane(z: u32, channels: u32, ctot: u32, coff: u32) -> u32 {
    return (z / channels) * ctot + coff + z % channels;
}
