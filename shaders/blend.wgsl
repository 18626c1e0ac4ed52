// Seam-free stitching: each tile's model output is multiplied by its window and added, with its
// weight, into a ring of accumulator rows (values and weights); `normalize` turns finished rows
// into value / weight and resets them for reuse.
//
// Deterministic: one `accumulate` dispatch per tile (`p.tile`), recorded in tile order, so every
// accumulator element has one writer per dispatch (a plain read-add-write, no atomics) and the
// tiles covering a pixel are added in a fixed order — the bytes do not depend on the run, the
// batch size or the device's scheduling.
//
// Two windows (`p.cut`):
// - feather (0): separable, sin² ramps of length `overlap` on the sides that have a neighbouring
//   tile, 1 elsewhere (image borders included). Neighbours' ramps are complementary
//   (sin² + cos² = 1) and never zero (half-pixel offset), so an identity model reproduces its
//   input. For models whose tiles differ near their edges (the U-Net).
// - cut (1): each tile gives only its core `cores[k]` = vec4(y_lo, y_hi, x_lo, x_hi), in tile
//   pixels; the cores partition the frame, so every pixel is one tile's value, stored as it is
//   (weight 1: value / 1 is the value, NaN included). For models whose output is exactly local
//   (the classical solver): with enough overlap a tile's core equals the whole frame's pixels.
// Tile descriptors: vec4(y0, x0, block column, flags) with flags bit 0 = neighbour above,
// 1 = below, 2 = left, 3 = right. Accumulator row of frame row y: y % ring.

struct BlendParams {
    count: u32,
    c: u32,
    th: u32,
    tw: u32,
    w: u32,
    ring: u32,
    overlap: u32,
    row0: u32,
    rows: u32,
    // The tile of the batch this accumulate dispatch adds.
    tile: u32,
    // 1: the cut window (`cores`), 0: feather.
    cut: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: BlendParams;
@group(0) @binding(1) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> wsum: array<f32>;
@group(0) @binding(4) var<storage, read> tile_out: array<T>;
@group(0) @binding(5) var<storage, read_write> rows_out: array<f32>;
@group(0) @binding(6) var<storage, read> cores: array<vec4<u32>>;

const PI: f32 = 3.14159265358979;

// Weight at distance j from a side with a neighbour.
fn ramp(j: u32) -> f32 {
    if (j >= p.overlap) {
        return 1.0;
    }
    let s = sin(PI * (f32(j) + 0.5) / (2.0 * f32(p.overlap)));
    return s * s;
}

fn axis_weight(j: u32, n: u32, low: bool, high: bool) -> f32 {
    var w = 1.0;
    if (low) {
        w *= ramp(j);
    }
    if (high) {
        w *= ramp(n - 1u - j);
    }
    return w;
}

// Tile p.tile of the batch: one invocation per tile pixel, each owning one accumulator element.
@compute @workgroup_size(256, 1, 1)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let k = p.tile;
    if (i >= p.th * p.tw || k >= p.count) {
        return;
    }
    let t = tiles[k];
    let y = i / p.tw;
    let x = i % p.tw;
    let r = (t.x + y) % p.ring;
    let col = t.y + x;
    if (p.cut != 0u) {
        let core = cores[k];
        if (y < core.x || y >= core.y || x < core.z || x >= core.w) {
            return;
        }
        for (var c = 0u; c < p.c; c++) {
            acc[(c * p.ring + r) * p.w + col] = f32(tile_out[((k * p.c + c) * p.th + y) * p.tw + x]);
        }
        wsum[r * p.w + col] = 1.0;
        return;
    }
    let wgt = axis_weight(y, p.th, (t.w & 1u) != 0u, (t.w & 2u) != 0u)
        * axis_weight(x, p.tw, (t.w & 4u) != 0u, (t.w & 8u) != 0u);
    for (var c = 0u; c < p.c; c++) {
        let a = (c * p.ring + r) * p.w + col;
        acc[a] = acc[a] + f32(tile_out[((k * p.c + c) * p.th + y) * p.tw + x]) * wgt;
    }
    wsum[r * p.w + col] = wsum[r * p.w + col] + wgt;
}

// rows_out[c, y, x] = value / weight for frame rows row0 .. row0 + rows; resets those rows.
@compute @workgroup_size(256, 1, 1)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.rows * p.w) {
        return;
    }
    let y = i / p.w;
    let x = i % p.w;
    let r = (p.row0 + y) % p.ring;
    let ws = wsum[r * p.w + x];
    wsum[r * p.w + x] = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let a = (c * p.ring + r) * p.w + x;
        let v = acc[a];
        acc[a] = 0.0;
        rows_out[(c * p.rows + y) * p.w + x] = select(0.0, v / ws, ws > 0.0);
    }
}
