// The bindings of a layer over channel views with its backward (pool.wgsl, upsample.wgsl): the
// forward reads x and writes y, the backward reads dy and writes dx. `store_dx` writes dx[o], added
// to what it holds when the including shader's parameters have `accumulate` set.

@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read_write> dx: array<T>;

fn store_dx(o: u32, v: f32) {
    var r = v;
    if (p.accumulate != 0u) {
        r += f32(dx[o]);
    }
    dx[o] = T(r);
}
