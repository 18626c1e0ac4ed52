//! `psi-gpu convert`: a folder of bucket images to a `(C, H, W)` npy stack, or a u8/u16 npy
//! stack to a folder of images (see [`crate::io::images`]).

use std::fmt;
use std::path::PathBuf;

use crate::commands::outputs::Files;
use crate::error::{Error, Result};
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
    let info = if opts.input.is_dir() {
        // The images it reads (a folder without them is the conversion's own error).
        let images = find_bucket_images(&opts.input, opts.pattern.as_deref()).unwrap_or_default();
        Files::new().inputs("the image", images).outputs("the output", [&opts.output]).check()?;
        images_to_npy(&opts.input, &opts.output, opts.pattern.as_deref())?
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
