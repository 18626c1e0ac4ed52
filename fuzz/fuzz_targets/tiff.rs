#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    psi_gpu_fuzz::tiff(data);
});
