//! A bucket frame held in memory, read in bands like a file: an [`ArrayView3`] of any memory
//! layout (C order, a slice with steps, transposed axes, negative strides). Each band is copied
//! once, row by row (a contiguous row as one block), into the bytes the tile stream uploads —
//! the frame itself is never copied whole.

use std::ops::Range;

use ndarray::{ArrayView3, s};

use crate::dtype::{HostElement, HostType};
use crate::error::{Error, Result};
use crate::io::bands::Bands;
use crate::io::row_sink::RowSink;

pub struct ArrayFrame<'a, T: HostElement> {
    view: ArrayView3<'a, T>,
    name: String,
}

impl<'a, T: HostElement> ArrayFrame<'a, T> {
    /// `view` as a `(C, H, W)` frame; `name` is how messages call it ("the frame").
    pub fn new(view: ArrayView3<'a, T>, name: impl Into<String>) -> ArrayFrame<'a, T> {
        ArrayFrame { view, name: name.into() }
    }
}

impl<T: HostElement> Bands for ArrayFrame<'_, T> {
    fn ty(&self) -> HostType {
        T::TYPE
    }

    fn frame_shape(&self) -> Result<[usize; 3]> {
        match self.view.dim() {
            (c, h, w) if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
            (c, h, w) => Err(Error::Shape(format!(
                "{}: expected a non-empty (channels, height, width) array, got shape ({c}, {h}, {w})",
                self.name
            ))),
        }
    }

    fn read_rows(&mut self, rows: Range<usize>) -> Result<Vec<u8>> {
        let (c, _, w) = self.view.dim();
        let mut out = Vec::with_capacity(c * rows.len() * w * T::TYPE.size());
        self.read_rows_to(rows, &mut out)?;
        Ok(out)
    }

    /// Row by row through one row's bytes, so a sink that is not a `Vec` gets no band-sized copy.
    fn read_rows_to(&mut self, rows: Range<usize>, out: &mut dyn RowSink) -> Result<()> {
        let (_, h, w) = self.view.dim();
        if rows.start > rows.end || rows.end > h {
            return Err(Error::Shape(format!("{}: rows {rows:?} of a frame {h} rows high", self.name)));
        }
        let mut bytes = Vec::with_capacity(w * T::TYPE.size());
        let band = self.view.slice(s![.., rows, ..]);
        for channel in band.outer_iter() {
            for row in channel.outer_iter() {
                bytes.clear();
                match row.as_slice() {
                    Some(values) => T::extend_le(values, &mut bytes),
                    None => row.iter().for_each(|&v| v.push_le(&mut bytes)),
                }
                out.put(&bytes);
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Axis};

    #[test]
    fn bands_of_any_layout_are_the_c_order_bytes() {
        let a = Array3::from_shape_fn((3, 5, 4), |(c, y, x)| (c * 100 + y * 10 + x) as u16);
        let want = |arr: &Array3<u16>, rows: Range<usize>| {
            let band = arr.slice(s![.., rows, ..]).to_owned();
            band.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        };
        let mut f = ArrayFrame::new(a.view(), "the frame");
        assert_eq!(f.read_rows(1..4).unwrap(), want(&a, 1..4));
        // Reversed rows and columns, and a view with swapped H and W.
        let flipped = a.slice(s![.., ..;-1, ..;-1]);
        assert_eq!(ArrayFrame::new(flipped, "f").read_rows(0..5).unwrap(), want(&flipped.to_owned(), 0..5));
        let mut t = a.clone();
        t.swap_axes(1, 2);
        assert_eq!(
            ArrayFrame::new(t.view(), "t").read_rows(2..4).unwrap(),
            want(&t.as_standard_layout().to_owned(), 2..4)
        );
        assert!(f.read_rows(3..6).is_err());
        let empty = a.slice(s![.., 0..0, ..]);
        assert!(ArrayFrame::new(empty, "e").frame_shape().unwrap_err().to_string().contains("non-empty"));
        let _ = Axis(0);
    }
}
