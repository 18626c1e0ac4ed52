//! A small reader and writer for NumPy `.npy` files.
//!
//! # Format
//!
//! A `.npy` file is, in order:
//!
//! 1. the magic string `\x93NUMPY`;
//! 2. two bytes of format version, major then minor: `1.0`, `2.0` or `3.0`;
//! 3. the header length: a little-endian `u16` for version 1.0, a `u32` for 2.0 and 3.0;
//! 4. the header: a Python dict literal such as
//!    `{'descr': '<f4', 'fortran_order': False, 'shape': (16, 100, 75), }`, padded with spaces
//!    and ended by `\n` so that the data starts at a multiple of 64 bytes (Latin-1 text for
//!    versions 1.0 and 2.0, UTF-8 for 3.0);
//! 5. the array data: `prod(shape) * itemsize` bytes in C order (`shape` `()` is a scalar).
//!
//! Only what the engine needs is supported: little-endian `uint8`, `uint16`, `float16` and
//! `float32` arrays in C order. Anything else is rejected with an [`Error::Npy`] naming the file,
//! never a panic, and sizes are checked against the file length before anything is allocated.
//!
//! Data is handed out as raw little-endian bytes ([`NpyReader::read_all`],
//! [`NpyReader::read_rows`]) so that callers can upload it to the GPU as it is, or decode it with
//! [`to_f32`]. [`NpyWriter`] streams data through the atomic writer ([`crate::io::atomic`]), so an
//! error never leaves a half-written `.npy` behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;

use crate::dtype::HostType;
use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;
use crate::io::row_sink::{READ_CHUNK, RowSink};

/// Every `.npy` file starts with these bytes.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;
/// The largest header accepted (numpy's own default limit when loading is 10 000 bytes).
const MAX_HEADER_LEN: usize = 1 << 20;
/// numpy pads the header so that the first axis can grow to this many digits in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Nesting limit of the header parser (the real header nests two levels deep).
const MAX_DEPTH: usize = 16;
/// Buffer size of [`NpyWriter`].
const WRITE_BUFFER: usize = 1 << 20;

fn npy_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Npy { path: path.to_path_buf(), message: message.into() }
}

/// Bytes of data an array of `shape` holds, `None` on overflow.
fn data_len(ty: HostType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(ty.size(), |acc, &d| acc.checked_mul(d))
}

/// The dtype string numpy writes for `ty`.
fn descr(ty: HostType) -> &'static str {
    match ty {
        HostType::U8 => "|u1",
        HostType::U16 => "<u2",
        HostType::F16 => "<f2",
        HostType::F32 => "<f4",
    }
}

/// The element type of a `descr` string, or why it is not supported (naming it with control
/// characters escaped, so that the message stays one line).
fn parse_descr(descr: &str) -> Result<HostType, String> {
    let shown = descr.escape_debug();
    match descr {
        // Byte order is meaningless for single bytes; numpy writes '|u1'.
        "|u1" | "<u1" | ">u1" => Ok(HostType::U8),
        "<u2" => Ok(HostType::U16),
        "<f2" => Ok(HostType::F16),
        "<f4" => Ok(HostType::F32),
        _ if descr.starts_with('>') => Err(format!(
            "unsupported dtype '{shown}': big-endian data is not supported; convert with \
             arr.astype(arr.dtype.newbyteorder('<'))"
        )),
        _ => Err(format!("unsupported dtype '{shown}': expected uint8, uint16, float16 or float32")),
    }
}

/// The parsed header of a `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type (always little-endian on disk).
    pub ty: HostType,
    /// Array shape in C order; empty for a scalar.
    pub shape: Vec<usize>,
    /// Byte offset of the first data byte in the file.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of elements (1 for a scalar). Cannot overflow for a header from [`read_header`].
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of data bytes: `len() * ty.size()`.
    pub fn data_bytes(&self) -> usize {
        self.len() * self.ty.size()
    }
}

/// Read and validate the header of the `.npy` file at `path`.
///
/// Checks the magic, version, dtype, memory order and that the file holds all the data the
/// shape promises.
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    parse_header(&mut file, path)
}

/// Parse and validate the header of the `.npy` file held in `bytes` (named `path` in errors),
/// exactly as [`read_header`] does for a file on disk.
pub fn parse_header_bytes(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    parse_header_from(&mut std::io::Cursor::new(bytes), bytes.len() as u64, path)
}

/// Parse the header of an open file; leaves the file position unspecified.
fn parse_header(file: &mut File, path: &Path) -> Result<NpyHeader> {
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    parse_header_from(file, file_len, path)
}

/// Parse the header of a `.npy` file of `file_len` bytes read from `file` (at its start);
/// leaves the position unspecified.
fn parse_header_from(file: &mut (impl Read + Seek), file_len: u64, path: &Path) -> Result<NpyHeader> {
    let io = |e| Error::io(path, e);

    // Magic (6), version (2), header length (2 or 4).
    let mut prefix = Vec::with_capacity(12);
    Read::by_ref(file).take(12).read_to_end(&mut prefix).map_err(io)?;
    if prefix.len() < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC[..] {
        return Err(npy_err(path, "not a .npy file (it does not start with \\x93NUMPY)"));
    }
    let truncated_header = || npy_err(path, "truncated: the file ends inside the .npy header");
    let &[major, minor] = prefix.get(6..8).ok_or_else(truncated_header)? else {
        return Err(truncated_header());
    };
    let len_size = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(npy_err(
                path,
                format!("unsupported .npy format version {major}.{minor}: expected 1.0, 2.0 or 3.0"),
            ));
        }
    };
    let start = 8 + len_size;
    let len_bytes = prefix.get(8..start).ok_or_else(truncated_header)?;
    let header_len = match *len_bytes {
        [a, b] => usize::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => return Err(truncated_header()),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(npy_err(
            path,
            format!("the header claims {header_len} bytes, more than the {MAX_HEADER_LEN} accepted"),
        ));
    }
    let data_offset = (start + header_len) as u64;
    if data_offset > file_len {
        return Err(truncated_header());
    }

    let mut raw = vec![0u8; header_len];
    file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
    file.read_exact(&mut raw).map_err(io)?;
    let text = if major >= 3 {
        String::from_utf8(raw).map_err(|_| npy_err(path, "the version 3.0 header is not UTF-8"))?
    } else {
        raw.iter().map(|&b| char::from(b)).collect() // Latin-1
    };

    let malformed = |message: String| {
        const SHOWN: usize = 200;
        let shown: String = text.trim_end().chars().take(SHOWN).collect();
        let more = if text.trim_end().chars().count() > SHOWN { "..." } else { "" };
        npy_err(path, format!("malformed header {shown:?}{more}: {message}"))
    };
    let entries = Parser::new(&text).dict().map_err(malformed)?;
    let field = |key: &str| {
        entries.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| malformed(format!("no '{key}' key")))
    };

    let ty = match field("descr")? {
        Literal::Str(s) => parse_descr(s).map_err(|m| npy_err(path, m))?,
        Literal::List => {
            return Err(npy_err(
                path,
                "unsupported dtype: structured arrays are not supported; expected uint8, uint16, \
                 float16 or float32",
            ));
        }
        other => return Err(malformed(format!("'descr' is {other:?}, not a string"))),
    };
    match field("fortran_order")? {
        Literal::Bool(false) => {}
        Literal::Bool(true) => {
            return Err(npy_err(path, "Fortran-order arrays are not supported; save with np.ascontiguousarray"));
        }
        other => return Err(malformed(format!("'fortran_order' is {other:?}, not a bool"))),
    }
    let shape = match field("shape")? {
        Literal::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Literal::Int(d) => Ok(*d),
                other => Err(malformed(format!("shape entry {other:?} is not an integer"))),
            })
            .collect::<Result<Vec<usize>>>()?,
        other => return Err(malformed(format!("'shape' is {other:?}, not a tuple"))),
    };

    let too_large = || npy_err(path, format!("shape {shape:?} is too large"));
    let data_bytes = data_len(ty, &shape).ok_or_else(too_large)?;
    let end = u64::try_from(data_bytes).ok().and_then(|n| n.checked_add(data_offset)).ok_or_else(too_large)?;
    if end > file_len {
        return Err(npy_err(
            path,
            format!("truncated: expected {data_bytes} data bytes, file has {}", file_len - data_offset),
        ));
    }
    Ok(NpyHeader { ty, shape, data_offset })
}

/// The Python literals a `.npy` header dict can contain.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(usize),
    None,
    Tuple(Vec<Literal>),
    /// A list (a structured dtype); its items are parsed but not kept.
    List,
}

/// A recursive-descent parser for the subset of Python literal syntax `.npy` headers use.
/// Strings are taken verbatim up to the closing quote (no escapes: dtype strings have none).
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { text, pos: 0, depth: 0 }
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            match self.peek() {
                Some(c) => Err(format!("expected '{}' at byte {}, found '{}'", b as char, self.pos, c as char)),
                None => Err(format!("expected '{}', found the end of the header", b as char)),
            }
        }
    }

    /// The whole header: one dict with string keys and nothing after it.
    fn dict(&mut self) -> Result<Vec<(String, Literal)>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                break;
            }
            let key = match self.value()? {
                Literal::Str(s) => s,
                other => return Err(format!("dict key {other:?} is not a string")),
            };
            self.expect(b':')?;
            let value = self.value()?;
            entries.push((key, value));
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        match self.peek() {
            None => Ok(entries),
            Some(_) => Err(format!("unexpected text after the dict at byte {}", self.pos)),
        }
    }

    fn value(&mut self) -> Result<Literal, String> {
        match self.peek() {
            Some(quote @ (b'\'' | b'"')) => self.string(quote),
            Some(b'(') => {
                self.pos += 1;
                let (mut items, trailing_comma) = self.sequence(b')')?;
                // As in Python, `(x)` is just `x`; `(x,)` is a tuple.
                if items.len() == 1
                    && !trailing_comma
                    && let Some(item) = items.pop()
                {
                    return Ok(item);
                }
                Ok(Literal::Tuple(items))
            }
            Some(b'[') => {
                self.pos += 1;
                self.sequence(b']')?;
                Ok(Literal::List)
            }
            Some(b'0'..=b'9') => self.int(),
            Some(b) if b.is_ascii_alphabetic() => self.word(),
            Some(b) => Err(format!("unexpected '{}' at byte {}", b as char, self.pos)),
            None => Err("unexpected end of the header".into()),
        }
    }

    /// Comma-separated values up to `close` (the opener is consumed); also whether the last
    /// value was followed by a comma.
    fn sequence(&mut self, close: u8) -> Result<(Vec<Literal>, bool), String> {
        if self.depth >= MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        self.depth += 1;
        let mut items = Vec::new();
        let trailing_comma = loop {
            if self.eat(close) {
                break !items.is_empty();
            }
            items.push(self.value()?);
            if !self.eat(b',') {
                self.expect(close)?;
                break false;
            }
        };
        self.depth -= 1;
        Ok((items, trailing_comma))
    }

    fn string(&mut self, quote: u8) -> Result<Literal, String> {
        let start = self.pos + 1;
        let len = self.text.as_bytes()[start..].iter().position(|&b| b == quote).ok_or("unterminated string")?;
        // `quote` is ASCII, so both ends are char boundaries.
        let s = self.text[start..start + len].to_string();
        self.pos = start + len + 1;
        Ok(Literal::Str(s))
    }

    fn int(&mut self) -> Result<Literal, String> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if bytes.get(self.pos) == Some(&b'L') {
            self.pos += 1; // Python 2 long suffix, written by very old numpy
        }
        digits.parse().map(Literal::Int).map_err(|_| format!("integer {digits} is too large"))
    }

    fn word(&mut self) -> Result<Literal, String> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while bytes.get(self.pos).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            self.pos += 1;
        }
        match &self.text[start..self.pos] {
            "True" => Ok(Literal::Bool(true)),
            "False" => Ok(Literal::Bool(false)),
            "None" => Ok(Literal::None),
            word => Err(format!("unexpected name '{word}'")),
        }
    }
}

/// An open `.npy` file with a validated header, read on demand.
#[derive(Debug)]
pub struct NpyReader {
    file: File,
    path: PathBuf,
    header: NpyHeader,
}

impl NpyReader {
    /// Open `path` and validate its header (see [`read_header`]).
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let header = parse_header(&mut file, path)?;
        Ok(NpyReader { file, path: path.to_path_buf(), header })
    }

    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All data bytes (little-endian, C order).
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        self.read_into_new(self.header.data_offset, self.header.data_bytes())
    }

    fn read_into_new(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(offset, len, &mut out)?;
        Ok(out)
    }

    /// Rows `rows` of every channel of a rank-3 `(C, H, W)` array, as the bytes of a contiguous
    /// `(C, rows.len(), W)` array. Memory is bounded by the band, so huge frames can be streamed
    /// band by band.
    pub fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>> {
        let ranges = self.row_ranges(rows)?;
        if let [(offset, len)] = ranges[..]
            && len == self.header.data_bytes()
        {
            return self.read_into_new(offset, len);
        }
        let mut out = Vec::with_capacity(ranges.iter().map(|r| r.1).sum());
        for (offset, len) in ranges {
            self.read_into(offset, len, &mut out)?;
        }
        Ok(out)
    }

    /// [`read_rows`](Self::read_rows) into `out`, [`READ_CHUNK`] bytes of the file at a time.
    pub fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
        let mut buf = Vec::new();
        for (offset, len) in self.row_ranges(rows)? {
            for at in (0..len).step_by(READ_CHUNK) {
                buf.clear();
                self.read_into(offset + at as u64, READ_CHUNK.min(len - at), &mut buf)?;
                out.put(&buf);
            }
        }
        Ok(())
    }

    /// The file ranges `(offset, bytes)` holding rows `rows` of every channel, in order.
    fn row_ranges(&self, rows: Range<usize>) -> Result<Vec<(u64, usize)>> {
        let &[channels, height, width] = self.header.shape.as_slice() else {
            return Err(npy_err(
                &self.path,
                format!("expected a rank-3 (C, H, W) array to read rows from, found shape {:?}", self.header.shape),
            ));
        };
        if rows.start > rows.end || rows.end > height {
            return Err(npy_err(
                &self.path,
                format!("rows {}..{} are out of bounds for {height} rows", rows.start, rows.end),
            ));
        }
        if rows.len() == height {
            return Ok(vec![(self.header.data_offset, self.header.data_bytes())]);
        }
        // These products are at most the data length, which was checked not to overflow.
        let row_bytes = width * self.header.ty.size();
        let band = rows.len() * row_bytes;
        Ok((0..channels)
            .map(|c| (self.header.data_offset + ((c * height + rows.start) * row_bytes) as u64, band))
            .collect())
    }

    /// The region `[y, x, h, w]` (rows `y..y+h`, columns `x..x+w`) of every channel of a
    /// `(C, H, W)` array, as the raw bytes of a contiguous `(C, h, w)` array. Reads only the
    /// region's rows.
    pub fn read_region(&mut self, [y, x, h, w]: [usize; 4]) -> Result<Vec<u8>> {
        let &[c, fh, fw] = self.header.shape.as_slice() else {
            return Err(Error::Shape(format!(
                "{}: expected a (C, H, W) frame, found shape {:?}",
                self.path.display(),
                self.header.shape
            )));
        };
        if h == 0 || w == 0 || y + h > fh || x + w > fw {
            return Err(Error::Shape(format!(
                "region y={y} x={x} h={h} w={w} does not fit in the {fh} x {fw} frame {} (or is empty)",
                self.path.display()
            )));
        }
        let s = self.header.ty.size();
        let band = self.read_rows(y..y + h)?;
        let mut out = Vec::with_capacity(c * h * w * s);
        for row in band.chunks_exact(fw * s) {
            out.extend_from_slice(&row[x * s..(x + w) * s]);
        }
        Ok(out)
    }

    /// Append `len` bytes read at `offset` to `out`.
    fn read_into(&mut self, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + len, 0);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut out[start..]))
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Decode raw little-endian `bytes` of type `ty` to f32 values, unscaled: integers become their
/// values (`255u8` is `255.0`). A trailing partial element is ignored.
pub fn to_f32(ty: HostType, bytes: &[u8]) -> Vec<f32> {
    match ty {
        HostType::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
        HostType::U16 => bytes.chunks_exact(2).map(|c| f32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
        HostType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        HostType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// The header numpy's `np.save` writes for a C-order array: version 1.0 (2.0 if it does not
/// fit), padded with spaces so that the data starts at a multiple of 64 bytes.
fn encode_header(ty: HostType, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_repr = match dims.as_slice() {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape_repr}, }}", descr(ty));
    // Like numpy, leave room for the first axis to grow in place.
    if let Some(first) = dims.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len())));
    }
    let text_len = dict.len() + 1; // with the final '\n'
    let pad_for = |len_size: usize| ALIGN - (MAGIC.len() + 2 + len_size + text_len) % ALIGN;
    let (version, len_bytes, pad) = match u16::try_from(text_len + pad_for(2)) {
        Ok(len) => (1, len.to_le_bytes().to_vec(), pad_for(2)),
        Err(_) => {
            let pad = pad_for(4);
            (2, ((text_len + pad) as u32).to_le_bytes().to_vec(), pad)
        }
    };
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_bytes.len() + text_len + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Streams an array into a `.npy` file through the atomic writer ([`AtomicFile`]): the target
/// appears, complete, only when [`finish`](NpyWriter::finish) has checked that all
/// `prod(shape) * itemsize` bytes were written; dropping the writer before that leaves the target
/// untouched and no temporary file behind.
#[derive(Debug)]
pub struct NpyWriter {
    file: AtomicFile,
    expected: u64,
    written: u64,
    /// Bytes of the header: data offset 0 is at this file position.
    header: u64,
}

impl NpyWriter {
    /// Create the temporary file and write the header of a C-order `ty` array of `shape`.
    pub fn new(path: &Path, ty: HostType, shape: &[usize]) -> Result<Self> {
        let expected = data_len(ty, shape).ok_or_else(|| npy_err(path, format!("shape {shape:?} is too large")))?;
        let mut file = AtomicFile::with_capacity(path, WRITE_BUFFER)?;
        let header = encode_header(ty, shape);
        file.write_all(&header)?;
        Ok(NpyWriter { file, expected: expected as u64, written: 0, header: header.len() as u64 })
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    /// Append data bytes (little-endian, C order); may be called any number of times.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.written + bytes.len() as u64;
        if total > self.expected {
            return Err(npy_err(
                self.path(),
                format!("too much data: the array holds {} bytes, got {total}", self.expected),
            ));
        }
        self.file.write_all(bytes)?;
        self.written = total;
        Ok(())
    }

    /// Write data bytes at byte `offset` of the data (for arrays produced out of order, such as
    /// the rows of every channel of a `(C, H, W)` array). Each byte must be written exactly once
    /// over all `write`/`write_at` calls for `finish` to accept the file.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let end = offset + bytes.len() as u64;
        if end > self.expected || self.written + bytes.len() as u64 > self.expected {
            return Err(npy_err(self.path(), format!("write past the end of a {}-byte array", self.expected)));
        }
        let pos = self.header + offset;
        let path = self.path().to_path_buf();
        self.file.writer()?.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(&path, e))?;
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Check that the array is complete, then commit the file to its final path.
    pub fn finish(self) -> Result<()> {
        if self.written != self.expected {
            return Err(npy_err(
                self.path(),
                format!("incomplete data: expected {} bytes, got {}", self.expected, self.written),
            ));
        }
        self.file.commit()
    }
}

/// Write `data` as a float32 `.npy` array of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if data_len(HostType::U8, shape) != Some(data.len()) {
        return Err(npy_err(path, format!("{} values do not fill shape {shape:?}", data.len())));
    }
    let mut writer = NpyWriter::new(path, HostType::F32, shape)?;
    let mut buf = Vec::with_capacity(WRITE_BUFFER);
    for chunk in data.chunks(WRITE_BUFFER / 4) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        writer.write(&buf)?;
    }
    writer.finish()
}

/// Read any supported `.npy` array as its shape and f32 values (converted, not scaled).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut reader = NpyReader::open(path)?;
    let bytes = reader.read_all()?;
    let values = to_f32(reader.header.ty, &bytes);
    Ok((reader.header.shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique path in the temp directory, removed (with any writer temp file) on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let file = format!("psi_gpu_npy_{}_{n}_{name}.npy", std::process::id());
            TempPath(std::env::temp_dir().join(file))
        }

        /// The atomic writer's temporary files for this path (`.NAME.tmp-*`).
        fn tmp_files(&self) -> Vec<PathBuf> {
            let prefix = format!(".{}.tmp-", self.0.file_name().unwrap().to_string_lossy());
            std::fs::read_dir(self.0.parent().unwrap())
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                .collect()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            for t in self.tmp_files() {
                let _ = std::fs::remove_file(t);
            }
        }
    }

    /// A hand-made `.npy` file: `dict` padded to 64 bytes with the given format version.
    fn npy_bytes(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let len_size = if major == 1 { 2 } else { 4 };
        let text_len = dict.len() + 1;
        let pad = (ALIGN - (8 + len_size + text_len) % ALIGN) % ALIGN;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&((text_len + pad) as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&((text_len + pad) as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(out.len() + pad, b' ');
        out.push(b'\n');
        assert_eq!(out.len() % ALIGN, 0);
        out.extend_from_slice(data);
        out
    }

    fn write_file(name: &str, bytes: &[u8]) -> TempPath {
        let path = TempPath::new(name);
        std::fs::write(&path.0, bytes).unwrap();
        path
    }

    fn dict(descr: &str, shape: &str) -> String {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    }

    /// The message of an `Error::Npy`.
    fn npy_message(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::Npy { message, .. }) => message,
            other => panic!("expected an Npy error, got {other:?}"),
        }
    }

    #[test]
    fn header_matches_numpy() {
        // Exactly what numpy 2.4's np.save writes before the data.
        let expect = |ty, shape: &[usize], dict: &str| {
            let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
            bytes.extend_from_slice(dict.as_bytes());
            bytes.resize(127, b' ');
            bytes.push(b'\n');
            assert_eq!(encode_header(ty, shape), bytes, "{dict}");
        };
        expect(HostType::U8, &[2, 3, 4], "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }");
        expect(HostType::F32, &[5], "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }");
        expect(HostType::F32, &[], "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
        expect(HostType::F16, &[7, 1234567], "{'descr': '<f2', 'fortran_order': False, 'shape': (7, 1234567), }");
    }

    #[test]
    fn reads_numpy_header() {
        let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
        bytes.extend_from_slice(b"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }");
        bytes.resize(127, b' ');
        bytes.push(b'\n');
        bytes.extend(0..24u8);
        let path = write_file("numpy", &bytes);
        let header = read_header(&path.0).unwrap();
        assert_eq!(header, NpyHeader { ty: HostType::U8, shape: vec![2, 3, 4], data_offset: 128 });
        assert_eq!(NpyReader::open(&path.0).unwrap().read_all().unwrap(), (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn reads_versions_and_shapes() {
        for (major, descr, shape_text, shape, data_len) in [
            (1, "<f4", "()", vec![], 4),
            (1, "<u1", "(5,)", vec![5], 5),
            (2, "<u2", "(16, 100, 75)", vec![16, 100, 75], 16 * 100 * 75 * 2),
            (3, "<f2", "(0, 3)", vec![0, 3], 0),
        ] {
            let data = vec![0u8; data_len];
            let bytes = npy_bytes(major, &dict(descr, shape_text), &data);
            let path = write_file("versions", &bytes);
            let header = read_header(&path.0).unwrap();
            assert_eq!(parse_header_bytes(&bytes, &path.0).unwrap(), header);
            assert_eq!(header.shape, shape, "{major} {shape_text}");
            assert_eq!(header.data_bytes(), data_len);
            assert_eq!(header.data_offset % ALIGN as u64, 0);
        }
        // Key order, quotes and spacing as Python would accept them; extra bytes after the data.
        let text = "{\"shape\":(2,3) ,\"fortran_order\":False,\"descr\":\"<f4\"}";
        let path = write_file("loose", &npy_bytes(1, text, &[0; 25]));
        let header = read_header(&path.0).unwrap();
        assert_eq!((header.ty, header.shape), (HostType::F32, vec![2, 3]));
    }

    #[test]
    fn round_trip_f32() {
        let path = TempPath::new("f32");
        let data: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_f32(&path.0, &[2, 3, 4], &data).unwrap();
        assert!(path.tmp_files().is_empty());
        let bytes = std::fs::read(&path.0).unwrap();
        assert_eq!(bytes.len(), 128 + data.len() * 4);
        assert_eq!(read_f32(&path.0).unwrap(), (vec![2, 3, 4], data));

        let header = read_header(&path.0).unwrap();
        assert_eq!(header, NpyHeader { ty: HostType::F32, shape: vec![2, 3, 4], data_offset: 128 });
    }

    #[test]
    fn write_at_fills_channels_row_band_by_row_band() {
        let path = TempPath::new("write_at");
        let (c, h, w) = (2usize, 5usize, 3usize);
        let data: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let mut wr = NpyWriter::new(&path.0, HostType::F32, &[c, h, w]).unwrap();
        for (r0, r1) in [(0, 2), (2, 5)] {
            for ch in 0..c {
                let block = &data[(ch * h + r0) * w..(ch * h + r1) * w];
                let bytes: Vec<u8> = block.iter().flat_map(|v| v.to_le_bytes()).collect();
                wr.write_at(((ch * h + r0) * w * 4) as u64, &bytes).unwrap();
            }
        }
        wr.finish().unwrap();
        assert_eq!(read_f32(&path.0).unwrap(), (vec![c, h, w], data));
        let mut wr = NpyWriter::new(&path.0, HostType::F32, &[2]).unwrap();
        assert!(wr.write_at(4, &[0; 8]).is_err());
    }

    #[test]
    fn round_trip_other_types() {
        let u8s: Vec<u8> = (0..=255).collect();
        let u16s: Vec<u8> = [0u16, 1, 255, 256, 40000, 65535].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16s: Vec<u8> =
            [0.0f32, -1.5, 0.25, 65504.0].iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        for (ty, shape, bytes, values) in [
            (HostType::U8, vec![16, 16], u8s.clone(), (0..=255).map(|v| v as f32).collect::<Vec<_>>()),
            (HostType::U16, vec![6], u16s, vec![0.0, 1.0, 255.0, 256.0, 40000.0, 65535.0]),
            (HostType::F16, vec![2, 1, 2], f16s, vec![0.0, -1.5, 0.25, 65504.0]),
        ] {
            let path = TempPath::new(ty.name());
            let mut writer = NpyWriter::new(&path.0, ty, &shape).unwrap();
            // Streamed in uneven pieces.
            for piece in bytes.chunks(3) {
                writer.write(piece).unwrap();
            }
            writer.finish().unwrap();
            let mut reader = NpyReader::open(&path.0).unwrap();
            assert_eq!(reader.header().ty, ty);
            assert_eq!(reader.header().shape, shape);
            assert_eq!(reader.read_all().unwrap(), bytes);
            assert_eq!(read_f32(&path.0).unwrap(), (shape, values));
        }
    }

    #[test]
    fn read_rows_matches_slicing() {
        let (c, h, w) = (3, 5, 4);
        let values: Vec<u16> = (0..(c * h * w) as u16).map(|v| v * 7 + 1000).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = TempPath::new("rows");
        let mut writer = NpyWriter::new(&path.0, HostType::U16, &[c, h, w]).unwrap();
        writer.write(&bytes).unwrap();
        writer.finish().unwrap();

        let mut reader = NpyReader::open(&path.0).unwrap();
        for start in 0..=h {
            for end in start..=h {
                let expected: Vec<u8> = (0..c)
                    .flat_map(|ch| &values[(ch * h + start) * w..(ch * h + end) * w])
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                assert_eq!(reader.read_rows(start..end).unwrap(), expected, "{start}..{end}");
            }
        }
        let message = npy_message(reader.read_rows(4..6));
        assert!(message.contains("out of bounds"), "{message}");
        #[allow(clippy::reversed_empty_ranges)]
        let message = npy_message(reader.read_rows(3..2));
        assert!(message.contains("out of bounds"), "{message}");
    }

    #[test]
    fn read_rows_needs_rank_3() {
        let path = write_file("rank", &npy_bytes(1, &dict("<f4", "(5, 4)"), &[0; 80]));
        let message = npy_message(NpyReader::open(&path.0).unwrap().read_rows(0..1));
        assert!(message.contains("rank-3"), "{message}");
    }

    #[test]
    fn rejects_bad_files() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("magic", b"PK\x03\x04 a zip file, not npy".to_vec(), "not a .npy file"),
            ("empty", Vec::new(), "not a .npy file"),
            ("short", b"\x93NUMPY\x01".to_vec(), "truncated"),
            (
                "fortran",
                npy_bytes(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", &[0; 16]),
                "Fortran-order arrays are not supported; save with np.ascontiguousarray",
            ),
            (
                "f8",
                npy_bytes(1, &dict("<f8", "(2,)"), &[0; 16]),
                "unsupported dtype '<f8': expected uint8, uint16, float16 or float32",
            ),
            ("i4", npy_bytes(1, &dict("<i4", "(2,)"), &[0; 8]), "unsupported dtype '<i4'"),
            ("b1", npy_bytes(1, &dict("|b1", "(2,)"), &[0; 2]), "unsupported dtype '|b1'"),
            ("newline", npy_bytes(1, &dict("\0\n<f4", "(2,)"), &[0; 8]), "unsupported dtype '\\0\\n<f4'"),
            ("big_endian", npy_bytes(1, &dict(">f4", "(2,)"), &[0; 8]), "big-endian data is not supported"),
            (
                "structured",
                npy_bytes(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", &[0; 4]),
                "structured arrays are not supported",
            ),
            (
                "truncated",
                npy_bytes(1, &dict("<f4", "(3, 4, 5)"), &[0; 100]),
                "truncated: expected 240 data bytes, file has 100",
            ),
            (
                "version",
                npy_bytes(1, &dict("<f4", "()"), &[0; 4])
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 6 { 4 } else { b })
                    .collect(),
                "version 4.0",
            ),
            ("overflow", npy_bytes(1, &dict("<f4", "(4294967296, 4294967296)"), &[]), "too large"),
            ("huge_dim", npy_bytes(1, &dict("<f4", "(99999999999999999999999,)"), &[]), "too large"),
            ("no_shape", npy_bytes(1, "{'descr': '<f4', 'fortran_order': False}", &[]), "no 'shape' key"),
            ("shape_int", npy_bytes(1, &dict("<f4", "(5)"), &[0; 20]), "not a tuple"),
            ("negative", npy_bytes(1, &dict("<f4", "(-1,)"), &[]), "malformed header"),
            (
                "garbage",
                npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", &[0; 4]),
                "unexpected text",
            ),
            ("unterminated", npy_bytes(1, "{'descr: '<f4'", &[]), "malformed header"),
            ("deep", npy_bytes(1, &format!("{{'shape': {}", "(".repeat(10000)), &[]), "nested too deeply"),
        ];
        for (name, bytes, expected) in cases {
            let path = write_file(name, &bytes);
            let message = npy_message(read_header(&path.0));
            assert!(message.contains(expected), "{name}: {message}");
            let message = npy_message(NpyReader::open(&path.0).map(|r| r.header.clone()));
            assert!(message.contains(expected), "{name}: {message}");
            let message = npy_message(parse_header_bytes(&bytes, &path.0));
            assert!(message.contains(expected), "{name}: {message}");
        }
        // Header length beyond the end of the file.
        let mut bytes = npy_bytes(1, &dict("<f4", "()"), &[0; 4]);
        bytes[8..10].copy_from_slice(&60000u16.to_le_bytes());
        let path = write_file("header_len", &bytes);
        assert!(npy_message(read_header(&path.0)).contains("truncated"));
        // A missing file is an I/O error naming it.
        let missing = TempPath::new("missing");
        match read_header(&missing.0) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writer_dropped_without_finish_leaves_nothing() {
        let path = TempPath::new("dropped");
        let mut writer = NpyWriter::new(&path.0, HostType::F32, &[2, 2]).unwrap();
        writer.write(&[0; 8]).unwrap();
        assert_eq!(path.tmp_files().len(), 1);
        drop(writer);
        assert!(!path.0.exists());
        assert!(path.tmp_files().is_empty());
    }

    #[test]
    fn writer_checks_the_data_length() {
        let path = TempPath::new("short");
        let mut writer = NpyWriter::new(&path.0, HostType::U16, &[3]).unwrap();
        writer.write(&[1, 2, 3, 4]).unwrap();
        assert!(npy_message(writer.finish()).contains("incomplete data: expected 6 bytes, got 4"));
        assert!(!path.0.exists() && path.tmp_files().is_empty());

        let mut writer = NpyWriter::new(&path.0, HostType::U16, &[3]).unwrap();
        writer.write(&[0; 4]).unwrap();
        assert!(npy_message(writer.write(&[0; 4])).contains("too much data"));
        drop(writer);
        assert!(!path.0.exists() && path.tmp_files().is_empty());

        assert!(npy_message(write_f32(&path.0, &[2, 2], &[0.0; 3])).contains("do not fill"));
        assert!(npy_message(NpyWriter::new(&path.0, HostType::F32, &[usize::MAX, 2])).contains("too large"));
        assert!(!path.0.exists() && path.tmp_files().is_empty());
    }

    #[test]
    fn writer_in_missing_directory_names_the_target() {
        let dir = TempPath::new("no_such_dir");
        let target = dir.0.join("out.npy");
        match write_f32(&target, &[1], &[1.0]) {
            Err(Error::Io { path, .. }) => assert_eq!(path, target),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writer_replaces_an_existing_file() {
        let path = write_file("replace", b"old contents");
        write_f32(&path.0, &[2], &[1.0, 2.0]).unwrap();
        assert_eq!(read_f32(&path.0).unwrap(), (vec![2], vec![1.0, 2.0]));
    }

    #[test]
    fn decodes_to_f32() {
        assert_eq!(to_f32(HostType::U8, &[0, 7, 255]), [0.0, 7.0, 255.0]);
        assert_eq!(to_f32(HostType::U16, &[0x34, 0x12, 0xff]), [4660.0]);
        assert_eq!(to_f32(HostType::F16, &f16::from_f32(-2.5).to_le_bytes()), [-2.5]);
        assert_eq!(to_f32(HostType::F32, &1.25f32.to_le_bytes()), [1.25]);
    }
}
