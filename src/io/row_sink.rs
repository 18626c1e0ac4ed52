//! Where the rows a frame reader reads go: [`RowSink`] takes bytes in order, so a band of rows
//! can be read into a `Vec` or straight into memory that is not the reader's (a staging buffer
//! the GPU copies from) without a copy in between.

/// Takes the bytes of a band of rows, in order.
pub trait RowSink {
    /// Append `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl RowSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Bytes of a file read at a time into a sink that is not a `Vec`.
pub const READ_CHUNK: usize = 1 << 20;
