//! `psi-gpu convert`: between the forms of a frame and of a height map. A folder of bucket
//! images (BMP, PNG, single-page TIFF) becomes a `(C, H, W)` npy or TIFF stack; an npy or TIFF
//! stack becomes a folder of images ([`crate::io::images`]) or, when the output names a file
//! (`.npy`, `.tif`/`.tiff`, `.x3p`), the other stack format, and a height map moves between npy,
//! float TIFF and X3P ([`crate::io::array_convert`]).

use std::fmt;
use std::path::PathBuf;

use crate::commands::outputs::Files;
use crate::error::{Error, Result};
use crate::io::array_convert::convert_array;
pub use crate::io::height_map::is_array_file;
use crate::io::images::{ConvertInfo, ImageFormat, find_bucket_images, images_to_npy, npy_to_images};

#[derive(Clone, Debug)]
pub struct Options {
    /// A folder of bucket images (to npy) or a `(C, H, W)` u8/u16 npy (to images).
    pub input: PathBuf,
    /// The npy to write, or the folder for the images.
    pub output: PathBuf,
    /// Image format when writing images.
    pub format: ImageFormat,
    /// File name pattern of the images, `{}` standing for the index (default `bucket_{}`).
    pub pattern: Option<String>,
    /// Lateral pitch (µm) of an X3P output.
    pub pixel_size_um: f64,
}

pub struct Report {
    pub options: Options,
    pub info: ConvertInfo,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, i) = (&self.options, &self.info);
        write!(f, "{} -> {}: ", o.input.display(), o.output.display())?;
        write!(f, "{} channels of {} x {} {}", i.channels, i.height, i.width, i.dtype.name())
    }
}

/// Images to npy when the input is a folder, else npy to images.
pub fn run(opts: &Options) -> Result<Report> {
    if !(opts.pixel_size_um.is_finite() && opts.pixel_size_um > 0.0) {
        return Err(Error::Invalid(format!(
            "--pixel-size {}: the pixel pitch must be positive (µm)",
            opts.pixel_size_um
        )));
    }
    let info = if opts.input.is_dir() {
        // The images it reads (a folder without them is the conversion's own error).
        let images = find_bucket_images(&opts.input, opts.pattern.as_deref()).unwrap_or_default();
        Files::new().inputs("the image", images).outputs("the output", [&opts.output]).check()?;
        images_to_npy(&opts.input, &opts.output, opts.pattern.as_deref())?
    } else if is_array_file(&opts.output) {
        if opts.pattern.is_some() {
            return Err(Error::Invalid("--pattern names the images read from a folder; the input is a file".into()));
        }
        Files::new().inputs("the input", [&opts.input]).outputs("the output", [&opts.output]).check()?;
        convert_array(&opts.input, &opts.output, opts.pixel_size_um)?
    } else {
        if let Some(pattern) = &opts.pattern {
            return Err(Error::Invalid(format!(
                "--pattern {pattern} names the images read from a folder; images written are named bucket_NN.{}",
                opts.format.extension()
            )));
        }
        Files::new().inputs("the input", [&opts.input]).output_folder("the output folder", &opts.output).check()?;
        npy_to_images(&opts.input, &opts.output, opts.format)?
    };
    Ok(Report { options: opts.clone(), info })
}
