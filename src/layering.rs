//! The layer rules of the crate, checked by reading the sources: a module imports only from
//! layers below its own (never sideways), every `include_str!` of a shader lives in `ops`, no
//! function is longer than [`MAX_FUNCTION_LINES`] and `main.rs` stays a thin CLI.

/// Top-level modules by layer, lowest first (see the crate docs).
pub const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("rng", 0),
    ("dtype", 0),
    ("io", 1),
    ("psi", 1),
    ("gpu", 2),
    ("ops", 3),
    ("autograd", 4),
    ("optim", 4),
    ("nn", 5),
    ("tiling", 6),
    ("commands", 7),
];

/// The longest function body allowed outside WGSL.
pub const MAX_FUNCTION_LINES: usize = 120;
/// The longest `main.rs` allowed: clap structs, conversions into options, printing.
pub const MAX_MAIN_LINES: usize = 400;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// Every library source file with its top-level module (`src/nn/unet/mod.rs` → `nn`).
    fn modules() -> Vec<(String, PathBuf)> {
        let mut files = Vec::new();
        sources(&src(), &mut files);
        files.sort();
        files
            .into_iter()
            .filter_map(|p| {
                let rel = p.strip_prefix(src()).unwrap();
                let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
                let top = first.trim_end_matches(".rs").to_string();
                (!["main", "lib", "layering"].contains(&top.as_str())).then_some((top, p))
            })
            .collect()
    }

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
    }

    /// Code lines: comments (and doc comments) dropped.
    fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
            .filter(|(_, l)| !l.trim().is_empty())
    }

    /// The top-level modules a line names through `crate::`, including grouped `use crate::{a, b}`.
    fn crate_paths(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    out.push(name);
                }
            } else {
                out.push(after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
            rest = after;
        }
        out.retain(|m| !m.is_empty() && m != "self");
        out
    }

    #[test]
    fn every_module_has_a_layer() {
        for (top, path) in modules() {
            assert!(layer(&top).is_some(), "{}: module '{top}' is not in layering::LAYERS", path.display());
        }
    }

    #[test]
    fn layers_only_import_downward() {
        let mut bad = Vec::new();
        for (top, path) in modules() {
            let own = layer(&top).unwrap_or(usize::MAX);
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in code(&text) {
                for m in crate_paths(line) {
                    // Re-exports at the crate root (`crate::Result`, `crate::Error`) are the bottom layer.
                    let theirs = layer(&m).unwrap_or(0);
                    if m != top && theirs >= own {
                        bad.push(format!(
                            "{}:{n}: {top} (layer {own}) uses crate::{m} (layer {theirs})",
                            path.display()
                        ));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "imports that do not point down:\n{}", bad.join("\n"));
    }

    #[test]
    fn shaders_are_included_only_by_ops() {
        for (top, path) in modules() {
            let text = std::fs::read_to_string(&path).unwrap();
            if top != "ops" {
                assert!(
                    !code(&text).any(|(_, l)| l.contains("include_str!")),
                    "{}: include_str! outside ops",
                    path.display()
                );
            }
        }
    }

    /// Lines from each `fn` to its closing brace at the same indentation.
    fn long_functions(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let is_fn =
                ["fn ", "pub fn ", "pub(crate) fn ", "async fn ", "pub async fn "].iter().any(|p| t.starts_with(p));
            if !is_fn || l.trim_end().ends_with(';') {
                continue;
            }
            let indent = &l[..l.len() - t.len()];
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|x| x.trim_end() == close) {
                let len = end + 2;
                if len > MAX_FUNCTION_LINES {
                    out.push(format!("{}:{}: {} lines", path.display(), i + 1, len));
                }
            }
        }
        out
    }

    #[test]
    fn functions_are_short_and_main_is_thin() {
        let mut files = Vec::new();
        sources(&src(), &mut files);
        let long: Vec<String> = files.iter().flat_map(|p| long_functions(p)).collect();
        assert!(long.is_empty(), "functions over {MAX_FUNCTION_LINES} lines:\n{}", long.join("\n"));
        let main = std::fs::read_to_string(src().join("main.rs")).unwrap();
        assert!(main.lines().count() <= MAX_MAIN_LINES, "main.rs has {} lines", main.lines().count());
    }

    #[test]
    fn the_checker_sees_what_it_should() {
        assert_eq!(crate_paths("use crate::gpu::{Gpu, Tensor};"), vec!["gpu"]);
        assert_eq!(crate_paths("use crate::{io, psi::PsiConfig};"), vec!["io", "psi"]);
        assert_eq!(crate_paths("let x = crate::io::npy::read(crate::nn::Model::x);"), vec!["io", "nn"]);
        assert_eq!(code("a // crate::nn\n/// crate::ops\n").map(|(_, l)| l.trim()).collect::<Vec<_>>(), vec!["a"]);
    }
}
