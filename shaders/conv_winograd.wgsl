// Winograd F(2x2, 3x3) convolution, padding 1, over NCHW channel views, with the fused epilogue
// of conv.wgsl: y = act(conv(x) * scale + shift). Inference only (training stays on conv3x3).
//
// Each 2x2 output tile reads a 4x4 input patch d (rows/columns -1..2 around the tile, zero
// outside the image) and computes
//   V = B^T d B,   M = sum over ci of U[oc, ci] ⊙ V[ci],   Y = A^T M A,
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],   A^T = [1 1 1 0; 0 1 -1 -1],
// with U = G g G^T made once from the 3x3 weights g on upload (src/ops/conv/winograd.rs):
// 16 multiplies per tile, input and output channel instead of the direct 36.
//
// U is stored as vec4 over four consecutive output channels: `wt[((oc / 4) * cin + ci) * 16 + t]`
// (t = 4 * row + column of the 4x4 tile; zero-padded to a multiple of four channels). The storage
// type T is f32 or f16 (see the prelude); transforms, workgroup memory and sums are f32.
//
// A workgroup computes 8 x 4 tiles (16 x 8 pixels) x 16 output channels. Per chunk of 4 input
// channels each of its 128 invocations transforms one (tile, channel) patch into workgroup
// memory, the U of the chunk is staged beside it, then each invocation accumulates M for its
// tile and output-channel quad (16 vec4 sums).

// ConvParams (affine = 1, accumulate = 0), the bindings 0-4 and store() are in lib/conv_io.wgsl;
// wt holds U.

const WTX: u32 = 8u;    // tiles per workgroup along x
const WTY: u32 = 4u;    // tiles per workgroup along y
const TILES: u32 = 32u; // WTX * WTY
const CHUNK: u32 = 4u;  // input channels per staged chunk
const QUADS: u32 = 4u;  // output-channel quads per workgroup (16 channels)

var<workgroup> vs: array<f32, 2048>;       // [(ci * 16 + t) * TILES + tile]
var<workgroup> us: array<vec4<f32>, 256>;  // [(ci * 16 + t) * QUADS + quad]

// The input value at (gy, gx) of channel c of image n, 0 outside the image (padding 1).
fn input_at(n: u32, c: u32, gy: i32, gx: i32) -> f32 {
    if (gy < 0 || gx < 0 || u32(gy) >= p.h || u32(gx) >= p.w) {
        return 0.0;
    }
    return f32(x[((n * p.in_ctot + p.in_coff + c) * p.h + u32(gy)) * p.w + u32(gx)]);
}

// B^T d B of the 4x4 patch whose top-left input pixel is (y0, x0), into vs for (ci, tile).
fn stage_input(n: u32, c: u32, ci: u32, tile: u32, y0: i32, x0: i32) {
    var d: array<vec4<f32>, 4>;
    for (var r = 0; r < 4; r++) {
        if (c < p.cin) {
            d[r] = vec4<f32>(
                input_at(n, c, y0 + r, x0),
                input_at(n, c, y0 + r, x0 + 1),
                input_at(n, c, y0 + r, x0 + 2),
                input_at(n, c, y0 + r, x0 + 3),
            );
        } else {
            d[r] = vec4<f32>(0.0);
        }
    }
    // Rows: t = B^T d.
    let t0 = d[0] - d[2];
    let t1 = d[1] + d[2];
    let t2 = d[2] - d[1];
    let t3 = d[1] - d[3];
    // Columns: v = t B (the same combination of each row's entries).
    let rows = array<vec4<f32>, 4>(t0, t1, t2, t3);
    for (var r = 0u; r < 4u; r++) {
        let q = rows[r];
        let v = vec4<f32>(q.x - q.z, q.y + q.z, q.z - q.y, q.y - q.w);
        for (var k = 0u; k < 4u; k++) {
            vs[(ci * 16u + r * 4u + k) * TILES + tile] = v[k];
        }
    }
}

// store() where (gy, gx) lies inside the image (edge tiles are partial).
fn store_inside(n: u32, oc: u32, gy: u32, gx: u32, v: f32) {
    if (gy < p.h && gx < p.w) {
        store(n, oc, gy, gx, v);
    }
}

@compute @workgroup_size(8, 4, 4)
fn winograd2x2(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n = wid.z / p.oc_tiles;
    let oct = wid.z % p.oc_tiles;
    let tile = lid.y * WTX + lid.x;
    let quad = lid.z;
    // The tile this invocation stages a patch of (one per invocation: 32 tiles x 4 channels).
    let stage_tile = li % TILES;
    let stage_ci = li / TILES;
    let sy = i32((wid.y * WTY + stage_tile / WTX) * 2u) - 1;
    let sx = i32((wid.x * WTX + stage_tile % WTX) * 2u) - 1;

    var m: array<vec4<f32>, 16>;
    for (var t = 0u; t < 16u; t++) {
        m[t] = vec4<f32>(0.0);
    }
    for (var c0 = 0u; c0 < p.cin; c0 += CHUNK) {
        stage_input(n, c0 + stage_ci, stage_ci, stage_tile, sy, sx);
        for (var i = li; i < CHUNK * 16u * QUADS; i += 128u) {
            let q = i % QUADS;
            let t = (i / QUADS) % 16u;
            let ci = i / (QUADS * 16u);
            let ocq = oct * QUADS + q;
            var v = vec4<f32>(0.0);
            if (c0 + ci < p.cin && ocq * 4u < p.cout) {
                v = vec4<f32>(wt[(ocq * p.cin + c0 + ci) * 16u + t]);
            }
            us[i] = v;
        }
        workgroupBarrier();
        for (var ci = 0u; ci < CHUNK; ci++) {
            for (var t = 0u; t < 16u; t++) {
                m[t] += vs[(ci * 16u + t) * TILES + tile] * us[(ci * 16u + t) * QUADS + quad];
            }
        }
        workgroupBarrier();
    }

    // Y = A^T M A, four output channels at once (the vec4 lanes).
    var r: array<vec4<f32>, 8>;  // A^T M: 2 rows x 4 columns
    for (var k = 0u; k < 4u; k++) {
        r[k] = m[k] + m[4u + k] + m[8u + k];
        r[4u + k] = m[4u + k] - m[8u + k] - m[12u + k];
    }
    let y00 = r[0] + r[1] + r[2];
    let y01 = r[1] - r[2] - r[3];
    let y10 = r[4] + r[5] + r[6];
    let y11 = r[5] - r[6] - r[7];

    let gy = (wid.y * WTY + lid.y) * 2u;
    let gx = (wid.x * WTX + lid.x) * 2u;
    let oc0 = (oct * QUADS + quad) * 4u;
    for (var j = 0u; j < 4u; j++) {
        let oc = oc0 + j;
        if (oc >= p.cout) {
            break;
        }
        store_inside(n, oc, gy, gx, y00[j]);
        store_inside(n, oc, gy, gx + 1u, y01[j]);
        store_inside(n, oc, gy + 1u, gx, y10[j]);
        store_inside(n, oc, gy + 1u, gx + 1u, y11[j]);
    }
}
