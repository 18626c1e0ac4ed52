//! The one atomic writer every output goes through. A file is written under a hidden temporary
//! name beside its target (`.NAME.tmp-PID-N`), flushed and synced to disk, then renamed over the
//! target. A writer dropped before [`AtomicFile::commit`] (an error, a panic, an interrupt)
//! removes its temporary file, so the target is either complete or untouched — never
//! half-written; a commit asked for after a stop request
//! ([`crate::error::interrupt`]) is refused.
//!
//! The temporary file is created exclusively (`create_new`): PID and counter make its name unique
//! within a host, and where they do not (two processes with one PID in different containers
//! sharing a folder, an old file a crashed run left) the next counter value is taken instead of
//! sharing the file. `NAME` is cut to [`MAX_STEM_BYTES`] so that the temporary name stays within
//! the 255-byte file-name limit of common file systems even for the longest target names.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result, interrupt};

/// The most bytes of the target's name the temporary name keeps (the rest of it, `.` and
/// `.tmp-PID-N`, takes at most 37 more).
pub const MAX_STEM_BYTES: usize = 200;

/// Tries at fresh counter values before giving up on creating a temporary file.
const MAX_TRIES: usize = 64;

/// `.NAME.tmp-PID-N` with NAME cut to [`MAX_STEM_BYTES`] (at a character boundary; a name that is
/// not UTF-8 is shown lossily — the name only has to be recognisable and unique).
fn temporary_name(name: &std::ffi::OsStr, n: u64) -> OsString {
    let mut tmp = OsString::from(".");
    if name.len() <= MAX_STEM_BYTES {
        tmp.push(name);
    } else {
        let lossy = name.to_string_lossy();
        let cut = (0..=MAX_STEM_BYTES).rev().find(|&i| lossy.is_char_boundary(i)).unwrap_or(0);
        tmp.push(&lossy[..cut]);
    }
    tmp.push(format!(".tmp-{}-{n}", std::process::id()));
    tmp
}

/// Create the temporary file of `path` (file name `name`) exclusively, at the first counter value
/// `next` gives whose name is free.
fn create_temporary(path: &Path, name: &std::ffi::OsStr, mut next: impl FnMut() -> u64) -> Result<(PathBuf, File)> {
    let mut tries = 1;
    loop {
        let tmp = path.with_file_name(temporary_name(name, next()));
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < MAX_TRIES => tries += 1,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

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
        let (tmp, file) = create_temporary(path, name, || COUNTER.fetch_add(1, Ordering::Relaxed))?;
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

    /// Flush, sync to disk, close, and rename the temporary file over the target — unless a stop
    /// was requested, which leaves the target untouched and removes the temporary file.
    pub fn commit(mut self) -> Result<()> {
        interrupt::check()?;
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

/// The temporary file as a plain writer (for encoders that own their output, such as a zip
/// writer); an error after the writer was closed is an `Other` I/O error.
impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().ok_or_else(closed)?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().ok_or_else(closed)?.flush()
    }
}

impl std::io::Seek for AtomicFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.out.as_mut().ok_or_else(closed)?.seek(pos)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("the writer is closed")
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
    fn the_longest_names_keep_their_temporary_name_within_the_limit() {
        let d = dir("long");
        for name in ["x".repeat(255), "é".repeat(127), format!("{}.npy", "a".repeat(251))] {
            let target = d.join(&name);
            let f = AtomicFile::create(&target).unwrap();
            let tmp = f.tmp.file_name().unwrap().to_string_lossy().into_owned();
            assert!(tmp.len() <= 255 && tmp.starts_with(&format!(".{}", &name[..100])), "{tmp}");
            assert!(tmp.contains(".tmp-"), "{tmp}");
            f.commit().unwrap();
            assert!(target.exists());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_temporary_name_already_taken_is_never_shared() {
        // Another process with our PID (another container on a shared folder) holds the names
        // of the next counter values: create_new moves on instead of truncating its file.
        let d = dir("taken");
        let (target, name) = (d.join("out.bin"), std::ffi::OsStr::new("out.bin"));
        let taken: Vec<PathBuf> = (1000..1040).map(|n| d.join(temporary_name(name, n))).collect();
        for p in &taken {
            std::fs::write(p, b"theirs").unwrap();
        }
        let mut n = 1000;
        let (tmp, mut file) = create_temporary(&target, name, || {
            n += 1;
            n - 1
        })
        .unwrap();
        assert_eq!(tmp, d.join(temporary_name(name, 1040)));
        file.write_all(b"ours").unwrap();
        for p in &taken {
            assert_eq!(std::fs::read(p).unwrap(), b"theirs", "{}", p.display());
        }
        // Names taken at every try: an error, not a shared file.
        assert!(create_temporary(&target, name, || 1000).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(AtomicFile::create(Path::new("/")).is_err());
    }
}
