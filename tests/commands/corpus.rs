//! The fuzz corpus as a regression test: every file of `fuzz/corpus/<target>/` (minimised with
//! `cargo fuzz cmin -- -set_cover_merge=1`) and of `fuzz/regressions/<target>/` (the inputs that
//! crashed a reader before its fix) goes through the same reader and checks as its fuzz target
//! (`fuzz/src/lib.rs`, included here): no panic, bad input one one-line error, good input
//! consistent with its header.

use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
mod checks;

#[test]
fn fuzz_corpus_reads_without_panics() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, check) in checks::TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(corpus.join(target))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        let regressions = corpus.with_file_name("regressions").join(target);
        if let Ok(dir) = std::fs::read_dir(&regressions) {
            files.extend(dir.map(|entry| entry.unwrap().path()));
        }
        files.sort();
        assert!(files.len() >= 10, "fuzz/corpus/{target} holds only {} files", files.len());
        let mut accepted = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap();
            match std::panic::catch_unwind(|| check(&data)) {
                Ok(ok) => accepted += usize::from(ok),
                Err(_) => failures.push(file.display().to_string()),
            }
        }
        // The seeds were valid files: some of them must still read.
        assert!(accepted > 0, "no file of fuzz/corpus/{target} is accepted");
    }
    assert!(failures.is_empty(), "these corpus files panic: {failures:?}");
}
