//! ISO 25178-72:2017 X3P height maps (the openGPS ISO 5436-2 XML format), written streamed and
//! read back.
//!
//! An X3P file is a zip holding `main.xml` (Record1: the axes — x and y incremental with the
//! pixel pitch in metres, z absolute; Record2: date, instrument, probing system, comment;
//! Record3: the matrix size and the link to the point data with its MD5; Record4: the checksum
//! file's name), `bindata/data.bin` (the heights, little-endian, x fastest, in metres; NaN for a
//! point not measured) and `md5checksum.hex` (the MD5 of `main.xml`, as `HEX *main.xml`).
//!
//! [`X3pWriter`] writes heights in µm (as psi-gpu's maps are) as f32 metres: `data.bin` is stored
//! (not compressed) and streamed row by row while its MD5 is computed, then `main.xml` (deflated)
//! and the checksum follow. Entries carry a fixed time (1980-01-01) and mode, and the XML only
//! what the caller gives, so the same heights and metadata give the same bytes. [`read_x3p`]
//! reads a surface (`SUR`, one layer, incremental x and y) of any point type — I (i16), L (i32),
//! F (f32), D (f64) — scaled by the z increment and offset, `valid.bin` applied, back to µm;
//! [`X3pRows`] reads it in bands of rows, streaming a stored or deflated `data.bin` from the file.
//!
//! The zip container is the `zip` crate's and the digest `md-5`'s (RustCrypto); the XML is
//! written here and read with a small element finder that is enough for the fixed structure.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;

/// Where the point data is, as every X3P writer names it.
const DATA: &str = "bindata/data.bin";
const CHECKSUM: &str = "md5checksum.hex";
/// The largest `main.xml` read.
const MAX_XML: u64 = 64 << 20;

fn x3p_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid(format!("{}: {}", path.display(), message.into()))
}

/// What Record2 says about the measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct X3pMeta {
    /// Lateral pitch in µm (x and y).
    pub pixel_size_um: f64,
    /// ISO 8601 date and time of the measurement (e.g. the input file's time).
    pub date: String,
    /// The instrument's model: what made the heights (e.g. `psi-gpu classical solver`).
    pub model: String,
    /// The instrument's version: the software's name and version.
    pub version: String,
    /// Record2/ProbingSystem/Identification (e.g. the wavelengths).
    pub probing: String,
    pub comment: String,
}

impl Default for X3pMeta {
    fn default() -> Self {
        X3pMeta {
            pixel_size_um: 1.0,
            date: "1970-01-01T00:00:00Z".into(),
            model: "psi-gpu".into(),
            version: format!("psi-gpu {}", env!("CARGO_PKG_VERSION")),
            probing: "phase-shifting interferometry".into(),
            comment: String::new(),
        }
    }
}

/// The modification time of `path` as ISO 8601 UTC (`2026-12-03T11:28:00Z`), or the epoch when
/// it cannot be read: a date that the same input file always gives.
pub fn file_date(path: &Path) -> String {
    let secs = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    iso_utc(secs)
}

/// Seconds since 1970 as ISO 8601 UTC.
fn iso_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Escape text for an XML element.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `main.xml` for a `w` x `h` map of f32 points whose data has MD5 `data_md5` (hex).
fn main_xml(meta: &X3pMeta, w: usize, h: usize, data_md5: &str) -> String {
    let step = meta.pixel_size_um * 1e-6;
    let axis = |name: &str| {
        format!(
            "      <{name}>\n        <AxisType>I</AxisType>\n        <DataType>D</DataType>\n        \
             <Increment>{step:e}</Increment>\n        <Offset>0</Offset>\n      </{name}>\n"
        )
    };
    let t = |s: &str| xml_text(s);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n\
         <p:ISO5436_2 xmlns:p=\"http://www.opengps.eu/2008/ISO5436_2\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://www.opengps.eu/2008/ISO5436_2 http://www.opengps.eu/2008/ISO5436_2/ISO5436_2.xsd\">\n\
         \x20 <Record1>\n    <Revision>ISO5436 - 2000</Revision>\n    <FeatureType>SUR</FeatureType>\n    <Axes>\n\
         {cx}{cy}      <CZ>\n        <AxisType>A</AxisType>\n        <DataType>F</DataType>\n        \
         <Increment>1</Increment>\n        <Offset>0</Offset>\n      </CZ>\n    </Axes>\n  </Record1>\n\
         \x20 <Record2>\n    <Date>{date}</Date>\n    <Creator>psi-gpu</Creator>\n    <Instrument>\n      \
         <Manufacturer>psi-gpu</Manufacturer>\n      <Model>{model}</Model>\n      <Serial>not available</Serial>\n      \
         <Version>{version}</Version>\n    </Instrument>\n    <CalibrationDate>{date}</CalibrationDate>\n    \
         <ProbingSystem>\n      <Type>NonContacting</Type>\n      <Identification>{probing}</Identification>\n    \
         </ProbingSystem>\n    <Comment>{comment}</Comment>\n  </Record2>\n\
         \x20 <Record3>\n    <MatrixDimension>\n      <SizeX>{w}</SizeX>\n      <SizeY>{h}</SizeY>\n      \
         <SizeZ>1</SizeZ>\n    </MatrixDimension>\n    <DataLink>\n      <PointDataLink>{DATA}</PointDataLink>\n      \
         <MD5ChecksumPointData>{data_md5}</MD5ChecksumPointData>\n    </DataLink>\n  </Record3>\n\
         \x20 <Record4>\n    <ChecksumFile>{CHECKSUM}</ChecksumFile>\n  </Record4>\n</p:ISO5436_2>\n",
        cx = axis("CX"),
        cy = axis("CY"),
        date = t(&meta.date),
        model = t(&meta.model),
        version = t(&meta.version),
        probing = t(&meta.probing),
        comment = t(&meta.comment),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Entry options: fixed time, mode and system, so the bytes are reproducible.
fn options(method: CompressionMethod, large: bool) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(method)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .system(zip::System::Unix)
        .large_file(large)
}

/// An X3P height map being written; heights arrive as f32 µm rows, top row first.
pub struct X3pWriter {
    zip: ZipWriter<AtomicFile>,
    path: PathBuf,
    md5: Md5,
    meta: X3pMeta,
    height: usize,
    width: usize,
    expected: u64,
    written: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for X3pWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X3pWriter").field("path", &self.path).finish()
    }
}

impl X3pWriter {
    /// Start the X3P of an `h` x `w` height map.
    pub fn new(path: &Path, [h, w]: [usize; 2], meta: &X3pMeta) -> Result<X3pWriter> {
        if !(meta.pixel_size_um.is_finite() && meta.pixel_size_um > 0.0) {
            return Err(x3p_err(path, format!("pixel size {} µm: it must be positive", meta.pixel_size_um)));
        }
        if h == 0 || w == 0 {
            return Err(x3p_err(path, "an empty map cannot be an X3P surface"));
        }
        let expected = (h as u64) * (w as u64) * 4;
        let file = AtomicFile::with_capacity(path, 1 << 20)?;
        let mut zip = ZipWriter::new(file);
        zip.start_file(DATA, options(CompressionMethod::Stored, expected >= (4 << 30) - (1 << 20)))
            .map_err(|e| zip_err(path, e))?;
        Ok(X3pWriter {
            zip,
            path: path.to_path_buf(),
            md5: Md5::new(),
            meta: meta.clone(),
            height: h,
            width: w,
            expected,
            written: 0,
            buf: Vec::new(),
        })
    }

    /// Append heights: `bytes` are little-endian f32 µm, C order (x fastest), the next ones.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.written + bytes.len() as u64;
        if total > self.expected || !bytes.len().is_multiple_of(4) {
            return Err(x3p_err(
                &self.path,
                format!("too much data: the map holds {} bytes, got {total}", self.expected),
            ));
        }
        self.buf.clear();
        self.buf.extend(bytes.chunks_exact(4).flat_map(|c| {
            let um = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            ((f64::from(um) * 1e-6) as f32).to_le_bytes()
        }));
        self.md5.update(&self.buf);
        self.zip.write_all(&self.buf).map_err(|e| Error::io(&self.path, e))?;
        self.written = total;
        Ok(())
    }

    /// Write at byte `offset` of the data: X3P maps are written in order, so only the next bytes.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset != self.written {
            return Err(x3p_err(&self.path, "X3P heights are written in order (one map, top row first)"));
        }
        self.write(bytes)
    }

    /// Check the data is complete, add `main.xml` and its checksum, and commit the file.
    pub fn finish(self) -> Result<()> {
        let X3pWriter { mut zip, path, md5, meta, height, width, expected, written, .. } = self;
        if written != expected {
            return Err(x3p_err(&path, format!("incomplete data: expected {expected} bytes, got {written}")));
        }
        let xml = main_xml(&meta, width, height, &hex(&md5.finalize()));
        let xml_md5 = hex(&Md5::digest(xml.as_bytes())).to_lowercase();
        let zerr = |e| zip_err(&path, e);
        zip.start_file("main.xml", options(CompressionMethod::Deflated, false)).map_err(zerr)?;
        zip.write_all(xml.as_bytes()).map_err(|e| Error::io(&path, e))?;
        zip.start_file(CHECKSUM, options(CompressionMethod::Stored, false)).map_err(zerr)?;
        zip.write_all(format!("{xml_md5} *main.xml\n").as_bytes()).map_err(|e| Error::io(&path, e))?;
        zip.finish().map_err(zerr)?.commit()
    }
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => Error::io(path, e),
        other => x3p_err(path, format!("not a readable X3P (zip) file: {other}")),
    }
}

/// The text of the first element `name` inside `xml` (its content between the tags).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&open)?;
        let rest = &xml[at + open.len()..];
        // `<SizeX>` or `<SizeX attr…>`, not `<SizeXY>`; `<X/>` is empty.
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                return body.find(&format!("</{name}>")).map(|end| &body[..end]);
            }
            Some(c) if c.is_whitespace() => {
                let gt = rest.find('>')?;
                if rest[..gt].ends_with('/') {
                    return Some("");
                }
                let body = &rest[gt + 1..];
                return body.find(&format!("</{name}>")).map(|end| &body[..end]);
            }
            _ => from = at + open.len(),
        }
    }
}

/// The trimmed text at `path` (nested element names) of `xml`.
fn field<'a>(xml: &'a str, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(xml, |x, name| element(x, name)).map(str::trim)
}

/// A surface read from an X3P file: heights in µm (NaN where not measured), x fastest.
#[derive(Clone, Debug)]
pub struct X3pMap {
    pub height: usize,
    pub width: usize,
    /// Lateral pitch in µm.
    pub step_x_um: f64,
    pub step_y_um: f64,
    pub values: Vec<f32>,
}

/// Read the entry `name` of `zip` whole, refusing more than `limit` bytes.
fn read_entry(zip: &mut ZipArchive<File>, path: &Path, name: &str, limit: u64) -> Result<Vec<u8>> {
    let entry = zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => x3p_err(path, format!("the X3P holds no {name}")),
        other => zip_err(path, other),
    })?;
    let mut out = Vec::new();
    entry.take(limit + 1).read_to_end(&mut out).map_err(|e| x3p_err(path, format!("cannot read {name}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(x3p_err(path, format!("{name} is larger than the {limit} bytes it should hold")));
    }
    Ok(out)
}

/// The point data entry `name` of `zip` (the X3P at `path`) as a reader of its `size`
/// uncompressed bytes and their CRC-32: a stored or deflated entry is read from the file as it is
/// consumed (only what a band needs is in memory), any other compression is decoded whole.
fn entry_reader(zip: &mut ZipArchive<File>, path: &Path, name: &str, size: u64) -> Result<(Box<dyn Read>, u32)> {
    let entry = zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => x3p_err(path, format!("the X3P holds no {name}")),
        other => zip_err(path, other),
    })?;
    if entry.size() != size {
        return Err(x3p_err(
            path,
            format!("{name} holds {} bytes, not the {size} of the matrix's points", entry.size()),
        ));
    }
    let (method, start, stored, crc) =
        (entry.compression(), entry.data_start(), entry.compressed_size(), entry.crc32());
    drop(entry);
    let raw = |start: u64| -> Result<BufReader<std::io::Take<File>>> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
        Ok(BufReader::new(file.take(stored)))
    };
    let reader: Box<dyn Read> = match (method, start) {
        (CompressionMethod::Stored, Some(start)) => Box::new(raw(start)?),
        (CompressionMethod::Deflated, Some(start)) => Box::new(flate2::bufread::DeflateDecoder::new(raw(start)?)),
        _ => Box::new(std::io::Cursor::new(read_entry(zip, path, name, size)?)),
    };
    Ok((reader, crc))
}

/// An X3P surface (see the module docs) read front to back in bands of rows, heights in µm:
/// `main.xml` and `valid.bin` (a bit per point) are held, the point data is streamed, and its
/// CRC-32 is checked when the last row is read.
pub struct X3pRows {
    path: PathBuf,
    pub height: usize,
    pub width: usize,
    /// Lateral pitch in µm.
    pub step_x_um: f64,
    pub step_y_um: f64,
    data: Box<dyn Read>,
    link: String,
    crc: (flate2::Crc, u32),
    item: usize,
    decode: fn(&[u8]) -> f64,
    dz: f64,
    z0: f64,
    valid: Option<Vec<u8>>,
    next_row: usize,
    raw: Vec<u8>,
}

impl std::fmt::Debug for X3pRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X3pRows({}, {} x {}, row {})", self.path.display(), self.height, self.width, self.next_row)
    }
}

impl X3pRows {
    /// Open the X3P surface at `path`: its XML checked against its MD5 and read, the point data
    /// not yet.
    pub fn open(path: &Path) -> Result<X3pRows> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut zip = ZipArchive::new(file).map_err(|e| zip_err(path, e))?;
        let raw = read_entry(&mut zip, path, "main.xml", MAX_XML)?;
        let xml = String::from_utf8(raw).map_err(|_| x3p_err(path, "main.xml is not UTF-8"))?;
        let bad = |m: &str| x3p_err(path, format!("main.xml: {m}"));
        if let Ok(sum) = read_entry(&mut zip, path, CHECKSUM, 4096) {
            let want = String::from_utf8_lossy(&sum).split_whitespace().next().unwrap_or("").to_lowercase();
            if want != hex(&Md5::digest(xml.as_bytes())).to_lowercase() {
                return Err(x3p_err(path, "main.xml does not match its MD5 in md5checksum.hex (the file is damaged)"));
            }
        }
        if field(&xml, &["Record1", "FeatureType"]) != Some("SUR") {
            return Err(bad("the feature type is not SUR: only areal surfaces are height maps"));
        }
        let axes = field(&xml, &["Record1", "Axes"]).ok_or_else(|| bad("no Record1/Axes"))?;
        let num = |p: &[&str]| {
            field(axes, p).map(|t| t.parse::<f64>().map_err(|_| bad(&format!("{} is not a number", p.join("/")))))
        };
        for a in ["CX", "CY"] {
            if field(axes, &[a, "AxisType"]) != Some("I") {
                return Err(bad(&format!("axis {a} is not incremental: only regular grids are read")));
            }
        }
        let step_x_um = num(&["CX", "Increment"]).transpose()?.unwrap_or(1.0) * 1e6;
        let step_y_um = num(&["CY", "Increment"]).transpose()?.unwrap_or(1.0) * 1e6;
        let dz = num(&["CZ", "Increment"]).transpose()?.unwrap_or(1.0);
        let z0 = num(&["CZ", "Offset"]).transpose()?.unwrap_or(0.0);
        let size = |n: &str| -> Result<usize> {
            field(&xml, &["Record3", "MatrixDimension", n])
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad(&format!("no valid Record3/MatrixDimension/{n}")))
        };
        let (width, height) = (size("SizeX")?, size("SizeY")?);
        if size("SizeZ")? != 1 || width == 0 || height == 0 {
            return Err(bad("only one non-empty layer (SizeZ 1) is read"));
        }
        let (item, decode): (usize, fn(&[u8]) -> f64) = match field(axes, &["CZ", "DataType"]) {
            Some("I") => (2, |b| f64::from(i16::from_le_bytes([b[0], b[1]]))),
            Some("L") => (4, |b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Some("F") => (4, |b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Some("D") => (8, |b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            other => return Err(bad(&format!("CZ data type {other:?}: expected I, L, F or D"))),
        };
        let points = width.checked_mul(height).ok_or_else(|| bad("the matrix size overflows"))?;
        let bytes = (points as u64).checked_mul(item as u64).ok_or_else(|| bad("the matrix size overflows"))?;
        let link = field(&xml, &["Record3", "DataLink", "PointDataLink"])
            .ok_or_else(|| bad("no Record3/DataLink/PointDataLink: points listed in the XML are not read"))?
            .to_string();
        let valid = match field(&xml, &["Record3", "DataLink", "ValidPointsLink"]) {
            Some(v) => Some(read_entry(&mut zip, path, v, points.div_ceil(8) as u64)?),
            None => None,
        };
        let (data, crc) = entry_reader(&mut zip, path, &link, bytes)?;
        Ok(X3pRows {
            path: path.to_path_buf(),
            height,
            width,
            step_x_um,
            step_y_um,
            data,
            link,
            crc: (flate2::Crc::new(), crc),
            item,
            decode,
            dz,
            z0,
            valid,
            next_row: 0,
            raw: Vec::new(),
        })
    }

    /// Rows not read yet.
    pub fn rows_left(&self) -> usize {
        self.height - self.next_row
    }

    /// Append the next `rows` rows (at most [`rows_left`](Self::rows_left)) to `out`, µm.
    pub fn read_rows(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let rows = rows.min(self.rows_left());
        let (first, n) = (self.next_row * self.width, rows * self.width);
        self.raw.resize(n * self.item, 0);
        self.data
            .read_exact(&mut self.raw)
            .map_err(|e| x3p_err(&self.path, format!("cannot read {} (rows {}..): {e}", self.link, self.next_row)))?;
        self.crc.0.update(&self.raw);
        out.reserve(n);
        out.extend(self.raw.chunks_exact(self.item).enumerate().map(|(k, b)| {
            let i = first + k;
            let ok = self.valid.as_ref().is_none_or(|v| v.get(i / 8).is_some_and(|byte| byte >> (i % 8) & 1 == 1));
            let z = (self.decode)(b) * self.dz + self.z0;
            if ok && z.is_finite() { (z * 1e6) as f32 } else { f32::NAN }
        }));
        self.next_row += rows;
        if self.next_row == self.height && self.crc.0.sum() != self.crc.1 {
            return Err(x3p_err(&self.path, format!("{} does not match its CRC-32 (the file is damaged)", self.link)));
        }
        Ok(())
    }
}

/// Read the X3P surface at `path` whole (see the module docs; [`X3pRows`] reads it in bands).
pub fn read_x3p(path: &Path) -> Result<X3pMap> {
    let mut rows = X3pRows::open(path)?;
    let mut values = Vec::new();
    rows.read_rows(rows.height, &mut values)?;
    Ok(X3pMap { height: rows.height, width: rows.width, step_x_um: rows.step_x_um, step_y_um: rows.step_y_um, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400 + 3723), "2000-02-29T01:02:03Z");
        assert_eq!(iso_utc(1_796_256_000), "2026-12-03T00:00:00Z");
    }

    #[test]
    fn element_finds_nested_text_and_not_prefixes() {
        let xml = "<a><SizeXY>9</SizeXY><SizeX>3</SizeX><b x=\"1\">t</b><c/></a>";
        assert_eq!(field(xml, &["a", "SizeX"]), Some("3"));
        assert_eq!(field(xml, &["a", "b"]), Some("t"));
        assert_eq!(field(xml, &["a", "d"]), None);
    }

    #[test]
    fn written_maps_read_back_with_nan_and_step() {
        let dir = std::env::temp_dir().join(format!("psi-gpu-x3p-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.x3p");
        let values = [1.5f32, f32::NAN, -2.25, 1000.0, 0.0, 3.0];
        let meta = X3pMeta { pixel_size_um: 0.5, comment: "a < b & c".into(), ..X3pMeta::default() };
        let mut w = X3pWriter::new(&path, [2, 3], &meta).unwrap();
        w.write(bytemuck::cast_slice(&values[..3])).unwrap();
        w.write_at(12, bytemuck::cast_slice(&values[3..])).unwrap();
        w.finish().unwrap();
        let first = std::fs::read(&path).unwrap();
        let map = read_x3p(&path).unwrap();
        assert_eq!((map.height, map.width), (2, 3));
        assert!((map.step_x_um - 0.5).abs() < 1e-12 && (map.step_y_um - 0.5).abs() < 1e-12);
        for (a, b) in map.values.iter().zip(values) {
            assert!(a.is_nan() == b.is_nan() && (a.is_nan() || (a - b).abs() <= 1e-6 * b.abs().max(1.0)), "{a} {b}");
        }
        // Same heights, same bytes.
        let mut w = X3pWriter::new(&path, [2, 3], &meta).unwrap();
        w.write(bytemuck::cast_slice(&values)).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
        // Incomplete: no file.
        std::fs::remove_file(&path).unwrap();
        let mut w = X3pWriter::new(&path, [2, 3], &meta).unwrap();
        w.write(bytemuck::cast_slice(&values[..3])).unwrap();
        assert!(w.finish().is_err());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A copy of the X3P at `from` with `data.bin` deflated.
    fn deflate(from: &Path, to: &Path) {
        let mut zip = ZipArchive::new(File::open(from).unwrap()).unwrap();
        let mut out = ZipWriter::new(File::create(to).unwrap());
        for k in 0..zip.len() {
            let mut entry = zip.by_index(k).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.start_file(name, SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)).unwrap();
            out.write_all(&bytes).unwrap();
        }
        out.finish().unwrap();
    }

    /// Bands of rows give what the whole read gives, from a stored (ours) and a deflated
    /// `data.bin`; a changed byte of the point data fails its CRC-32 at the last row.
    #[test]
    fn rows_stream_from_stored_and_deflated_data() {
        let dir = std::env::temp_dir().join(format!("psi-gpu-x3p-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (h, w) = (7, 5);
        let values: Vec<f32> = (0..h * w).map(|i| if i % 11 == 3 { f32::NAN } else { i as f32 * 0.25 - 3.0 }).collect();
        let stored = dir.join("s.x3p");
        let mut writer = X3pWriter::new(&stored, [h, w], &X3pMeta::default()).unwrap();
        writer.write(bytemuck::cast_slice(&values)).unwrap();
        writer.finish().unwrap();
        let whole = read_x3p(&stored).unwrap().values;
        let (deflated, damaged) = (dir.join("d.x3p"), dir.join("x.x3p"));
        deflate(&stored, &deflated);
        // A byte of the stored point data changed in the file (its CRC-32 kept).
        let at = ZipArchive::new(File::open(&stored).unwrap()).unwrap().by_name(DATA).unwrap().data_start().unwrap();
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[at as usize + 5] ^= 0x40;
        std::fs::write(&damaged, bytes).unwrap();
        for path in [&stored, &deflated] {
            let mut rows = X3pRows::open(path).unwrap();
            let mut got = Vec::new();
            for band in [3, 1, 2, 5] {
                rows.read_rows(band, &mut got).unwrap();
            }
            assert_eq!(rows.rows_left(), 0);
            assert!(got.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", path.display());
            assert_eq!(got.len(), h * w);
        }
        let mut rows = X3pRows::open(&damaged).unwrap();
        let mut got = Vec::new();
        rows.read_rows(h - 1, &mut got).unwrap();
        let e = rows.read_rows(1, &mut got).unwrap_err().to_string();
        assert!(e.contains("CRC-32"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
