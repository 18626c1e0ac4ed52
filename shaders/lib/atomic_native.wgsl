// Blend accumulators with native f32 atomics (SHADER_FLOAT32_ATOMIC).

@group(0) @binding(2) var<storage, read_write> acc: array<atomic<f32>>;
@group(0) @binding(3) var<storage, read_write> wsum: array<atomic<f32>>;

fn acc_add(i: u32, v: f32) {
    atomicAdd(&acc[i], v);
}

fn wsum_add(i: u32, v: f32) {
    atomicAdd(&wsum[i], v);
}

// Read and reset (each index is taken by one invocation).
fn acc_take(i: u32) -> f32 {
    let v = atomicLoad(&acc[i]);
    atomicStore(&acc[i], 0.0);
    return v;
}

fn wsum_take(i: u32) -> f32 {
    let v = atomicLoad(&wsum[i]);
    atomicStore(&wsum[i], 0.0);
    return v;
}
