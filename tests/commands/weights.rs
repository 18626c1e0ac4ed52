//! The safetensors reader and writer (`io::weights`): the same tensors and metadata give the same
//! bytes (header keys sorted, 8-byte aligned) with the layout Python's safetensors writes; NaN or
//! ±Inf is refused on load and on save, naming the tensor; a PyTorch pickle, an integer tensor and
//! DataParallel's `module.` prefix each get a message saying what the file is. No GPU needed,
//! except the one CLI run.

use std::collections::HashMap;
use std::process::Command;

use crate::common::{TempPath, fixture};
use psi_gpu::error::Error;
use psi_gpu::io::checkpoint::{self, Checkpoint};
use psi_gpu::io::weights::{Dtype, Weights, f32_bytes, to_safetensors};
use psi_gpu::nn::cpikan::CpikanWeights;
use psi_gpu::nn::cpikan::fit::save_model;
use psi_gpu::nn::unet::UNet;
use psi_gpu::nn::unet::init::he_init;

type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors and metadata of `make_safetensors_fixture.py`.
fn python_fixture_input() -> (Vec<Entry>, HashMap<String, String>) {
    let f32s = |name: &str, shape: &[usize], v: Vec<f32>| (name.to_string(), Dtype::F32, shape.to_vec(), f32_bytes(&v));
    let tensors = vec![
        f32s("b.weight", &[2, 3], (0..6).map(|i| i as f32 * 0.5 - 1.0).collect()),
        f32s("a.bias", &[3], vec![1.5, -2.25, 3.0]),
        f32s("c.scalar", &[], vec![7.5]),
        ("a.num_batches_tracked".to_string(), Dtype::I64, vec![], 42i64.to_le_bytes().to_vec()),
        f32s("z.conv", &[2, 1, 3, 3], (0..18).map(|i| i as f32 * 0.125).collect()),
    ];
    let mut metadata: HashMap<String, String> = (0..10).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
    metadata.insert("input_scale".into(), "1/255".into());
    (tensors, metadata)
}

/// (header length, header JSON, data) of safetensors bytes.
fn split(bytes: &[u8]) -> (usize, serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (n, serde_json::from_slice(&bytes[8..8 + n]).unwrap(), &bytes[8 + n..])
}

fn invalid(m: String) -> Error {
    Error::Invalid(m)
}

#[test]
fn the_same_tensors_give_the_same_bytes_laid_out_as_python_does() {
    let (tensors, metadata) = python_fixture_input();
    // Each call gets its own HashMap (its own iteration order): the bytes must not follow it.
    let runs: Vec<Vec<u8>> =
        (0..4).map(|_| to_safetensors(&tensors, metadata.clone().into_iter().collect(), invalid).unwrap()).collect();
    assert!(runs.iter().all(|b| *b == runs[0]), "two writes of the same tensors differ");
    let bytes = &runs[0];
    let (n, header, data) = split(bytes);
    assert_eq!(n % 8, 0, "header length {n} is not a multiple of 8");
    let text = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let json_end = text.trim_end_matches(' ').len();
    assert_eq!(text.as_bytes()[json_end - 1], b'}', "only spaces pad the header");
    // Sorted keys: the top level (tensor names, __metadata__) and the metadata map.
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let order = |s: &str, k: &str| s.find(&format!("\"{k}\":")).unwrap();
    let top = keys(&header);
    assert!(top.windows(2).all(|w| order(text, &w[0]) < order(text, &w[1])), "{text}");
    let meta_text = &text[order(text, "__metadata__")..];
    let meta = keys(&header["__metadata__"]);
    assert!(meta.windows(2).all(|w| order(meta_text, &w[0]) < order(meta_text, &w[1])), "{text}");

    // What Python's safetensors wrote for the same input: the same data bytes, the same header.
    let py = std::fs::read(fixture("safetensors_python.safetensors")).unwrap();
    let (_, py_header, py_data) = split(&py);
    assert_eq!(data, py_data, "tensor data differs from Python's layout");
    assert_eq!(header, py_header, "header differs from Python's");

    // And it reads back: values, integer tensors, metadata.
    let w = Weights::parse("mem.safetensors".as_ref(), bytes).unwrap();
    assert_eq!(w.tensors["z.conv"].shape, vec![2, 1, 3, 3]);
    assert_eq!(w.tensors["b.weight"].data, vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    assert_eq!(w.other.get("a.num_batches_tracked"), Some(&Dtype::I64));
    assert_eq!(w.metadata, metadata);
}

#[test]
fn two_checkpoint_saves_give_identical_files() {
    let dir = TempPath::dir("two_checkpoint_saves");
    let metadata = (0..12).map(|i| (format!("k{i}"), i.to_string())).collect();
    let ck = Checkpoint { tensors: he_init(3, 1, 4, 5), num_batches_tracked: 7, metadata, optimizer: None };
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    checkpoint::save(&a, &ck).unwrap();
    checkpoint::save(&b, &ck).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn non_finite_values_are_refused_on_save() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (mut tensors, metadata) = python_fixture_input();
        let mut v = vec![1.0f32; 18];
        v[5] = bad;
        v[9] = bad;
        tensors[4].3 = f32_bytes(&v);
        let e = to_safetensors(&tensors, metadata, invalid).unwrap_err().to_string();
        assert!(e.contains("tensor 'z.conv' has 2 non-finite of 18 values") && e.contains("at index 5"), "{e}");
        assert!(e.contains("refusing to save"), "{e}");
    }
}

/// A safetensors file of one `dtype` tensor `name` written by the safetensors crate itself (no
/// checks of ours on the way).
fn raw_file(dir: &TempPath, file: &str, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> std::path::PathBuf {
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), data).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, safetensors::serialize([(name, view)], None).unwrap()).unwrap();
    path
}

#[test]
fn non_finite_values_are_refused_on_load() {
    let dir = TempPath::dir("non_finite_on_load");
    let f16_inf = half::f16::INFINITY.to_le_bytes();
    let cases: [(&str, Dtype, Vec<u8>, &str); 3] = [
        ("f32", Dtype::F32, f32_bytes(&[0.5, f32::NAN, 2.0]), "1 non-finite of 3 values (the first, NaN, at index 1)"),
        (
            "f16",
            Dtype::F16,
            [[0u8, 0], f16_inf, f16_inf].concat(),
            "2 non-finite of 3 values (the first, inf, at index 1)",
        ),
        // An F64 beyond f32's range is ±Inf in the model: refused as well.
        ("f64", Dtype::F64, [1e300f64, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(), "index 0"),
    ];
    for (file, dtype, data, want) in cases {
        let path = raw_file(&dir, file, "inc.double_conv.0.weight", dtype, &[3], &data);
        let e = Weights::load(&path).unwrap_err().to_string();
        assert!(e.contains("tensor 'inc.double_conv.0.weight' has") && e.contains(want), "{file}: {e}");
        assert!(e.contains(path.to_str().unwrap()), "{e}");
    }
}

/// The error of loading `bytes` as weights.
fn load_error(dir: &TempPath, file: &str, bytes: &[u8]) -> String {
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    Weights::load(&path).unwrap_err().to_string()
}

/// The first bytes of a zip whose first entry is `name` (a local file header, stored).
fn zip_start(name: &str) -> Vec<u8> {
    let mut b = b"PK\x03\x04".to_vec();
    b.extend_from_slice(&[0u8; 22]);
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&[0x80, 0x02, b'}', b'q']);
    b
}

#[test]
fn a_pytorch_pickle_is_named_with_the_conversion() {
    let dir = TempPath::dir("pytorch_pickle");
    let hint = "safetensors.torch.save_file(model.state_dict(), \"w.safetensors\")";
    // torch.save since PyTorch 1.6: a zip with `<name>/data.pkl`; before: a bare pickle, which
    // starts with the legacy magic number pickled at protocol 2.
    let legacy = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
    for (file, bytes, kind) in
        [("model.pt", zip_start("archive/data.pkl"), "zip format"), ("model.pth", legacy.to_vec(), "legacy format")]
    {
        let e = load_error(&dir, file, &bytes);
        assert!(e.contains("a PyTorch pickle") && e.contains(kind), "{e}");
        assert!(e.contains(hint) && e.contains(&format!("torch.load(\"{file}\"")), "{e}");
        assert!(!e.contains("too large"), "{e}");
    }
    let e = load_error(&dir, "arrays.npz", &zip_start("a.npy"));
    assert!(e.contains("a zip archive, not a safetensors file"), "{e}");
    let e = load_error(&dir, "text.safetensors", b"hello, not safetensors");
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn integer_tensors_and_the_module_prefix_are_named() {
    let dir = TempPath::dir("integer_and_module");
    let ints = raw_file(&dir, "ints", "inc.double_conv.0.weight", Dtype::I64, &[1], &7i64.to_le_bytes());
    let e = UNet::config(&Weights::load(&ints).unwrap()).unwrap_err().to_string();
    assert!(e.contains("'inc.double_conv.0.weight' is an integer tensor (I64)"), "{e}");
    let w = Weights::load(&ints).unwrap();
    let e = w.get("inc.double_conv.0.weight", &[8, 16, 3, 3]).unwrap_err().to_string();
    assert!(e.contains("integer tensor (I64); expected a floating-point tensor of shape [8, 16, 3, 3]"), "{e}");

    let dp = raw_file(&dir, "dp", "module.inc.double_conv.0.weight", Dtype::F32, &[1], &f32_bytes(&[1.0]));
    let e = UNet::config(&Weights::load(&dp).unwrap()).unwrap_err().to_string();
    assert!(e.contains("'module.inc.double_conv.0.weight'") && e.contains("nn.DataParallel"), "{e}");
    assert!(e.contains("removeprefix(\"module.\")"), "{e}");
}

#[test]
fn infer_with_a_pytorch_file_says_so_on_one_line() {
    let dir = TempPath::dir("infer_pt");
    let pt = dir.join("model.pt");
    std::fs::write(&pt, zip_start("archive/data.pkl")).unwrap();
    let line = infer_error_line(&dir, "frame_64x64.npy", &pt);
    assert!(line.contains("a PyTorch pickle"), "{line}");
}

/// `infer FRAME --weights WEIGHTS` into `dir`: it must fail with exit 2, one `error:` line (which
/// is returned) and no output.
fn infer_error_line(dir: &TempPath, frame: &str, weights: &std::path::Path) -> String {
    let out = dir.join("h.npy");
    let o = Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
        .args(["infer", fixture(frame).to_str().unwrap(), "--weights", weights.to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error:"), "{stderr}");
    assert!(!out.exists());
    lines[0].to_string()
}

#[test]
fn a_cpikan_model_with_a_non_finite_parameter_is_not_saved() {
    let dir = TempPath::dir("cpikan_save");
    let path = dir.join("model.safetensors");
    let mut w = CpikanWeights::load(&fixture("cpikan_2_16_16_1.safetensors")).unwrap();
    save_model(&path, &w).unwrap();
    let before = std::fs::read(&path).unwrap();
    w.ln_bias[1][3] = f32::NAN;
    let e = save_model(&path, &w).unwrap_err().to_string();
    assert!(e.contains("tensor 'network.4.bias' has 1 non-finite of 16 values") && e.contains("refusing"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the saved model was touched");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

/// `infer --weights` on a residual model's file (metadata `psi_gpu_model = residual`): the run
/// gives the classical height plus PyTorch's correction (make_residual_fixtures.py) in f32 and in
/// the adapter's default precision, NaN where the solver leaves the pixel.
#[test]
fn infer_detects_a_residual_model() {
    let dir = TempPath::dir("infer_residual");
    let (_, cls) = psi_gpu::io::npy::read_f32(&fixture("residual_classical_64x80.npy")).unwrap();
    let (_, corr) = psi_gpu::io::npy::read_f32(&fixture("residual_correction_64x80.npy")).unwrap();
    for (precision, limit) in [("f32", 1e-4), ("auto", 3e-2)] {
        let out = dir.join(format!("h-{precision}.npy"));
        let o = Command::new(env!("CARGO_BIN_EXE_psi-gpu"))
            .args(["infer", fixture("residual_frame_64x80.npy").to_str().unwrap(), "--precision", precision])
            .args(["--weights", fixture("residual_b8.safetensors").to_str().unwrap(), "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("residual (robust classical + unet base 8"));
        let (shape, h) = psi_gpu::io::npy::read_f32(&out).unwrap();
        assert_eq!(shape, vec![64, 80]);
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..h.len() {
            assert_eq!(h[i].is_nan(), cls[i].is_nan(), "{precision}: pixel {i}");
            if h[i].is_finite() {
                num += ((h[i] - cls[i] - corr[i]) as f64).powi(2);
                den += (corr[i] as f64).powi(2);
            }
        }
        let e = (num / den).sqrt();
        assert!(e < limit, "{precision}: correction relative L2 {e:e}");
    }
}

/// A file that says residual but whose U-Net reads 16 channels where buckets + its one feature are
/// 17: one error line naming both, exit 2, no output.
#[test]
fn a_residual_model_with_the_wrong_input_channels_is_one_error_line() {
    let dir = TempPath::dir("bad_residual");
    let w = Weights::load(&fixture("unet_b8.safetensors")).unwrap();
    let tensors: Vec<Entry> =
        w.tensors.iter().map(|(n, t)| (n.clone(), Dtype::F32, t.shape.clone(), f32_bytes(&t.data))).collect();
    let meta: HashMap<String, String> =
        [("psi_gpu_model", "residual"), ("features", "valid")].map(|(k, v)| (k.into(), v.into())).into();
    let path = dir.join("bad.safetensors");
    std::fs::write(&path, to_safetensors(&tensors, meta, invalid).unwrap()).unwrap();
    let line = infer_error_line(&dir, "residual_frame_64x80.npy", &path);
    assert!(line.contains("17 input channels") && line.contains("reads 16 channels"), "{line}");
}
