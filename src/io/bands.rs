//! [`Bands`]: a `(C, H, W)` bucket frame read in bands of rows, whatever holds it — a file
//! ([`FrameSource`](crate::io::frame_source::FrameSource): npy, TIFF stack, folder of TIFF pages)
//! or an array in memory ([`ArrayFrame`](crate::io::array_frame::ArrayFrame)). The tile stream
//! reads its input through this and nothing else, so memory stays bounded by the band.

use std::ops::Range;

use crate::dtype::HostType;
use crate::error::Result;
use crate::io::row_sink::RowSink;

pub trait Bands {
    /// Element type of the bytes handed out.
    fn ty(&self) -> HostType;
    /// `(C, H, W)`, non-empty, or an error naming the frame.
    fn frame_shape(&self) -> Result<[usize; 3]>;
    /// Rows `rows` of every channel, as the little-endian bytes of a `(C, rows.len(), W)` array.
    fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>>;
    /// [`read_rows`](Self::read_rows) into `out` (e.g. straight into a staging buffer).
    fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()>;
    /// How messages name the frame: its path, or what the caller calls the array.
    fn name(&self) -> String;
    /// What messages call its channels ("channels", or "channels (pages)" for a TIFF stack).
    fn channel_unit(&self) -> &'static str {
        "channels"
    }
}
