//! The files a command reads and writes, checked before it does any work: no output may be the
//! same file as an input (it would replace it) or as another output (two writers, one file), and
//! every output's folder must exist and take a new file. "The same file" is decided by device
//! and inode where both files exist (on Unix; hard links and symbolic links included), else by
//! canonical path (for a file not there yet: its folder's canonical path and its name).
//!
//! Each command lists its files at the top of its `run`:
//! `Files::new().inputs("--weights", &o.weights).outputs("-o", [&o.output]).check()?`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;

/// The extensions of the frame files a `--frames` folder stands for (npy and TIFF; a folder of
/// TIFF bucket pages is one frame, and its pages are among these too).
pub const FRAME_FILES: &[&str] = &["npy", "tif", "tiff"];

/// A command's input and output files, each with the role (flag) a message names it by.
#[derive(Clone, Debug, Default)]
pub struct Files {
    inputs: Vec<(String, PathBuf)>,
    outputs: Vec<(String, PathBuf)>,
    folders: Vec<(String, PathBuf)>,
}

impl Files {
    pub fn new() -> Files {
        Files::default()
    }

    /// Files the command reads.
    pub fn inputs<P: AsRef<Path>>(mut self, role: &str, paths: impl IntoIterator<Item = P>) -> Files {
        self.inputs.extend(paths.into_iter().map(|p| (role.to_string(), p.as_ref().to_path_buf())));
        self
    }

    /// Files the command reads, a folder among `paths` standing for its files of the extensions
    /// `exts` (as `--frames` reads them: [`FRAME_FILES`]).
    pub fn inputs_in_folders<P: AsRef<Path>>(
        self,
        role: &str,
        paths: impl IntoIterator<Item = P>,
        exts: &[&str],
    ) -> Files {
        let mut files = Vec::new();
        for p in paths {
            let p = p.as_ref();
            match std::fs::read_dir(p) {
                Ok(entries) => files.extend(
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| exts.iter().any(|e| x == *e))),
                ),
                Err(_) => files.push(p.to_path_buf()),
            }
        }
        self.inputs(role, files)
    }

    /// Files the command writes.
    pub fn outputs<P: AsRef<Path>>(mut self, role: &str, paths: impl IntoIterator<Item = P>) -> Files {
        self.outputs.extend(paths.into_iter().map(|p| (role.to_string(), p.as_ref().to_path_buf())));
        self
    }

    /// A folder the command writes files into (created if missing): it may not be an input.
    pub fn output_folder(mut self, role: &str, path: &Path) -> Files {
        self.folders.push((role.to_string(), path.to_path_buf()));
        self
    }

    /// Refuse (before any work) an output that is an input or another output, an output that is
    /// a folder, or one whose folder is missing or does not take a new file. An output folder
    /// ([`Files::output_folder`]) not made yet stands for a new, empty folder: the files to be
    /// written into it are checked against the others, and the command makes it after the check.
    pub fn check(&self) -> Result<()> {
        let written = self.outputs.iter().chain(&self.folders);
        for (k, (role, out)) in written.clone().enumerate() {
            if let Some((other_role, other)) = self.inputs.iter().find(|(_, i)| same_file(out, i)) {
                return Err(same(role, out, other_role, other, "an output may not replace an input"));
            }
            if let Some((other_role, other)) = written.clone().skip(k + 1).find(|(_, o)| same_file(out, o)) {
                return Err(same(role, out, other_role, other, "two outputs cannot share one file"));
            }
        }
        for (role, path) in &self.folders {
            if path.exists() && !path.is_dir() {
                return Err(Error::Invalid(format!("{role} {}: not a folder", path.display())));
            }
        }
        let to_make = |path: &Path| {
            let folder = folder_of(path);
            !folder.exists() && self.folders.iter().any(|(_, f)| same_file(f, folder))
        };
        self.outputs.iter().filter(|(_, path)| !to_make(path)).try_for_each(|(role, path)| writable(role, path))
    }
}

fn same(role: &str, out: &Path, other_role: &str, other: &Path, consequence: &'static str) -> Error {
    Error::SameFile {
        output_role: role.into(),
        output: out.into(),
        other_role: other_role.into(),
        other: other.into(),
        consequence,
    }
}

/// `path` can be written: not a folder, in a folder that exists and takes a new file (tried by
/// creating and dropping the atomic writer's temporary file).
fn writable(role: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Invalid(format!("{role} {}: is a folder, not a file", path.display())));
    }
    let folder = folder_of(path);
    if !folder.is_dir() {
        let what = if folder.exists() { "is not a folder" } else { "does not exist" };
        return Err(Error::Invalid(format!("{role} {}: the folder {} {what}", path.display(), folder.display())));
    }
    drop(AtomicFile::create(path)?);
    Ok(())
}

/// The folder `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Whether `a` and `b` name one file (see the module docs).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    canonical(a) == canonical(b)
}

/// The canonical path of `p`, or for a file not there yet its folder's and its name.
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (std::fs::canonicalize(folder_of(p)), p.file_name()) {
        (Ok(folder), Some(name)) => folder.join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psi-gpu-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn one_file_under_several_names_is_one_file() {
        let d = dir("names");
        let a = d.join("a.npy");
        std::fs::write(&a, b"x").unwrap();
        assert!(same_file(&a, &d.join("sub/../a.npy")), "a path through another folder");
        assert!(same_file(&d.join("new.npy"), &d.join("sub/../new.npy")), "a file not there yet");
        assert!(!same_file(&a, &d.join("b.npy")));
        #[cfg(unix)]
        {
            std::fs::hard_link(&a, d.join("hard.npy")).unwrap();
            std::os::unix::fs::symlink(&a, d.join("soft.npy")).unwrap();
            assert!(same_file(&a, &d.join("hard.npy")), "a hard link");
            assert!(same_file(&d.join("soft.npy"), &a), "a symbolic link");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn aliases_missing_folders_and_folders_as_files_are_refused() {
        let d = dir("check");
        let input = d.join("in.npy");
        std::fs::write(&input, b"frame").unwrap();
        let out = d.join("out.npy");
        let files = || Files::new().inputs("the input", [&input]);
        assert!(files().outputs("-o", [&out]).outputs("--quality", [d.join("q.npy")]).check().is_ok());
        let e = files().outputs("-o", [d.join("sub/../in.npy")]).check().unwrap_err();
        assert!(matches!(e, Error::SameFile { .. }), "{e}");
        assert!(e.to_string().contains("replace an input"), "{e}");
        let e = files().outputs("-o", [&out]).outputs("--stats-json", [&out]).check().unwrap_err();
        assert!(e.to_string().starts_with("-o ") && e.to_string().contains("--stats-json"), "{e}");
        let e = files().outputs("-o", [d.join("none/out.npy")]).check().unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = files().outputs("-o", [d.join("sub")]).check().unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        let e = files().output_folder("the folder", &input).check().unwrap_err();
        assert!(matches!(e, Error::SameFile { .. }), "{e}");
        let e = Files::new().inputs_in_folders("--frames", [&d], FRAME_FILES).outputs("--history", [&input]).check();
        assert!(matches!(e, Err(Error::SameFile { .. })), "{e:?}");
        assert_eq!(std::fs::read(&input).unwrap(), b"frame");
        let mut left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["in.npy", "sub"], "the checks leave no file behind");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
