//! The one atomic writer every output goes through. A file is written under a hidden temporary
//! name beside its target (`.NAME.tmp-PID-N`, unique per process and per file, so two outputs
//! never share one), flushed and synced to disk, then renamed over the target. A writer dropped
//! before [`AtomicFile::commit`] (an error, a panic) removes its temporary file, so the target is
//! either complete or untouched — never half-written.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A file being written under a temporary name (see the module docs).
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Create the temporary file for `path` with an 8 KiB write buffer.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        Self::with_capacity(path, 8 << 10)
    }

    /// Create the temporary file for `path` with a write buffer of `capacity` bytes.
    pub fn with_capacity(path: &Path, capacity: usize) -> Result<AtomicFile> {
        let name = path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp).map_err(|e| Error::io(path, e))?;
        Ok(AtomicFile { path: path.to_path_buf(), tmp, out: Some(BufWriter::with_capacity(capacity, file)) })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The buffered temporary file (it also seeks).
    pub fn writer(&mut self) -> Result<&mut BufWriter<File>> {
        let path = &self.path;
        self.out.as_mut().ok_or_else(|| Error::Invalid(format!("{}: the writer is closed", path.display())))
    }

    /// Write all of `bytes` at the current position.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path.clone();
        self.writer()?.write_all(bytes).map_err(|e| Error::io(path, e))
    }

    /// Flush, sync to disk, close, and rename the temporary file over the target.
    pub fn commit(mut self) -> Result<()> {
        let out =
            self.out.take().ok_or_else(|| Error::Invalid(format!("{}: the writer is closed", self.path.display())))?;
        let file = out.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(file); // closed before the rename, which Windows requires
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        drop(self.out.take());
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `path` atomically through `write`, which gets the buffered temporary file.
pub fn write_with(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    write(file.writer()?)?;
    file.commit()
}

/// Write `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psi-gpu-atomic-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_and_drop_leaves_the_target_untouched() {
        let d = dir("commit");
        let target = d.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"half").unwrap();
            // dropped without commit: an error path
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(entries(&d), vec!["out.bin"], "no temporary file is left");
        write_bytes(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(&d), vec!["out.bin"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn two_writers_of_one_path_use_different_temporary_files() {
        let d = dir("two");
        let target = d.join("same.bin");
        let mut a = AtomicFile::create(&target).unwrap();
        let mut b = AtomicFile::create(&target).unwrap();
        a.write_all(b"aaaa").unwrap();
        b.write_all(b"bb").unwrap();
        assert_ne!(a.tmp, b.tmp);
        a.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"aaaa");
        b.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"bb", "the last commit wins whole, never a mix");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(AtomicFile::create(Path::new("/")).is_err());
    }
}
