// Blend accumulators for adapters without f32 atomics (the GL backend): f32 values kept as u32
// bit patterns, added with a compare-and-swap loop.

@group(0) @binding(2) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> wsum: array<atomic<u32>>;

fn acc_add(i: u32, v: f32) {
    var old = atomicLoad(&acc[i]);
    loop {
        let r = atomicCompareExchangeWeak(&acc[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if (r.exchanged) {
            break;
        }
        old = r.old_value;
    }
}

fn wsum_add(i: u32, v: f32) {
    var old = atomicLoad(&wsum[i]);
    loop {
        let r = atomicCompareExchangeWeak(&wsum[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if (r.exchanged) {
            break;
        }
        old = r.old_value;
    }
}

// Read and reset (each index is taken by one invocation).
fn acc_take(i: u32) -> f32 {
    return bitcast<f32>(atomicExchange(&acc[i], 0u));
}

fn wsum_take(i: u32) -> f32 {
    return bitcast<f32>(atomicExchange(&wsum[i], 0u));
}
