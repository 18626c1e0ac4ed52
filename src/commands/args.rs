//! Values the command line spells as text, one parser each: `FromStr` (and `Display` where a
//! default is shown in `--help`). A parse error is an [`ArgError`] whose message names the flag;
//! the CLI prints it as its one `error:` line.

use std::fmt;
use std::str::FromStr;

use crate::commands::finetune::Layers;
use crate::commands::pinn::{FitInit, Problem};
use crate::commands::train::LossChoice;
use crate::dtype::HostType;
use crate::gpu::Precision;
use crate::io::height_map::MapFormat;
use crate::io::preview::PreviewRange;
use crate::io::weights::parse_scale;
use crate::ops::classical::{MinModulation, Search, Unwrap};
use crate::ops::conv::select::Conv;
use crate::optim::LrSchedule;
use crate::psi::PhaseSteps;
use crate::psi::config::{DEFAULT_A, DEFAULT_B, DEFAULT_WAVELENGTHS};
use crate::psi::surface::Shape;
use crate::psi::synthetic::{Patch, PatchKind};

/// A value the command line could not parse; the message names the flag and what it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn fail<T>(message: String) -> Result<T, ArgError> {
    Err(ArgError(message))
}

/// The value `table` names `s`, else the error `message` gives.
fn named<T: Clone>(s: &str, table: &[(&str, T)], message: impl FnOnce() -> String) -> Result<T, ArgError> {
    table.iter().find(|(name, _)| *name == s).map(|(_, v)| v.clone()).ok_or_else(|| ArgError(message()))
}

/// `LO,HI` as two numbers (spaces around them allowed).
fn pair<T: FromStr>(s: &str) -> Option<(T, T)> {
    let (a, b) = s.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// `--precision`: `auto` (f16 where the GPU has it: `None`), `f32` or `f16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrecisionArg(pub Option<Precision>);

impl FromStr for PrecisionArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        Precision::parse(s)
            .map(PrecisionArg)
            .ok_or_else(|| ArgError(format!("--precision '{s}': expected auto, f32 or f16")))
    }
}

/// `--input-scale`: a positive number such as `0.5`, `1e-3` or `1/255`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputScale(pub f32);

impl FromStr for InputScale {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        parse_scale(s)
            .map(InputScale)
            .ok_or_else(|| ArgError(format!("--input-scale '{s}': expected a positive number like 1/255")))
    }
}

/// `--height-range LO,HI` in µm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeightRange(pub (f32, f32));

const HEIGHT_RANGE: &str = "expected LO,HI in µm (like 0.1,2.4)";

impl FromStr for HeightRange {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        pair(s).map(HeightRange).ok_or_else(|| ArgError(format!("--height-range '{s}': {HEIGHT_RANGE}")))
    }
}

impl fmt::Display for HeightRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.0.0, self.0.1)
    }
}

/// Training's `--height-range`: `LO,HI` in µm, or `full` (`None`: the surfaces' own range).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticRange(pub Option<(f32, f32)>);

impl FromStr for SyntheticRange {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        match s {
            "full" => Ok(SyntheticRange(None)),
            _ => match pair(s) {
                Some(r) => Ok(SyntheticRange(Some(r))),
                None => fail(format!("--height-range '{s}': {HEIGHT_RANGE} or full")),
            },
        }
    }
}

impl fmt::Display for SyntheticRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("full"),
            Some(r) => HeightRange(r).fmt(f),
        }
    }
}

/// `--schedule`: `constant`, `step:SIZE:GAMMA` (StepLR) or `exp:GAMMA` (ExponentialLR).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(pub LrSchedule);

impl FromStr for Schedule {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let schedule = match s.split(':').collect::<Vec<_>>()[..] {
            ["constant"] => Some(LrSchedule::Constant),
            ["step", size, gamma] => size
                .parse()
                .ok()
                .zip(gamma.parse().ok())
                .map(|(step_size, gamma)| LrSchedule::Step { step_size, gamma }),
            ["exp", gamma] => gamma.parse().ok().map(|gamma| LrSchedule::Exponential { gamma }),
            _ => None,
        };
        schedule
            .map(Schedule)
            .ok_or_else(|| ArgError(format!("--schedule '{s}': expected constant, step:SIZE:GAMMA or exp:GAMMA")))
    }
}

/// `--dtype`: `f32`, `f16`, `u8` or `u16` (numpy's `float32`, `float16`, `uint8`, `uint16` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype(pub HostType);

const DTYPES: [(&str, HostType); 8] = [
    ("f32", HostType::F32),
    ("float32", HostType::F32),
    ("f16", HostType::F16),
    ("float16", HostType::F16),
    ("u8", HostType::U8),
    ("uint8", HostType::U8),
    ("u16", HostType::U16),
    ("uint16", HostType::U16),
];

impl FromStr for Dtype {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let s = s.to_ascii_lowercase();
        named(&s, &DTYPES, || format!("--dtype '{s}': expected f32, f16, u8 or u16")).map(Dtype)
    }
}

/// `--format` of many-frame infer's maps: `npy`, `tiff` (or `tif`) or `x3p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFormatArg(pub MapFormat);

impl FromStr for MapFormatArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        MapFormat::parse(s)
            .map(MapFormatArg)
            .ok_or_else(|| ArgError(format!("--format '{s}': expected npy, tiff or x3p")))
    }
}

/// `--shape`: `seed`, `random` or `steep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SurfaceShape(pub Shape);

impl FromStr for SurfaceShape {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        Shape::parse(s)
            .map(SurfaceShape)
            .ok_or_else(|| ArgError(format!("--shape '{s}': expected seed, random or steep")))
    }
}

/// `--wavelengths`: the lasers' wavelengths in µm, comma-separated; the default is
/// [`DEFAULT_WAVELENGTHS`].
#[derive(Clone, Debug, PartialEq)]
pub struct Wavelengths(pub Vec<f32>);

impl Default for Wavelengths {
    fn default() -> Self {
        Wavelengths(DEFAULT_WAVELENGTHS.to_vec())
    }
}

impl FromStr for Wavelengths {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let values: Option<Vec<f32>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
        values
            .map(Wavelengths)
            .ok_or_else(|| ArgError(format!("--wavelengths '{s}': expected wavelengths in µm like 5.0,5.5")))
    }
}

impl fmt::Display for Wavelengths {
    /// Each value as Rust's shortest round-trip form with a decimal point (`5.0,5.5,6.05,6.655`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(|v| format!("{v:?}")).collect();
        f.write_str(&text.join(","))
    }
}

/// `--ab A,B`: the bucket model's offset and modulation; the default is [`DEFAULT_A`],
/// [`DEFAULT_B`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ab(pub f32, pub f32);

impl Default for Ab {
    fn default() -> Self {
        Ab(DEFAULT_A, DEFAULT_B)
    }
}

impl FromStr for Ab {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        pair(s).map(|(a, b)| Ab(a, b)).ok_or_else(|| ArgError("--ab: expected A,B".into()))
    }
}

impl fmt::Display for Ab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.0, self.1)
    }
}

/// `--region y,x,h,w` in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(pub [usize; 4]);

impl FromStr for Region {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let values: Option<Vec<usize>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
        match values.as_deref() {
            Some(&[y, x, h, w]) => Ok(Region([y, x, h, w])),
            _ => fail("--region: expected y,x,h,w".into()),
        }
    }
}

impl FromStr for LossChoice {
    type Err = ArgError;
    /// `--loss`: `physics`, `supervised` or `auto`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let table =
            [("physics", LossChoice::Physics), ("supervised", LossChoice::Supervised), ("auto", LossChoice::Auto)];
        named(s, &table, || format!("--loss '{s}': expected auto, physics or supervised"))
    }
}

impl FromStr for Layers {
    type Err = ArgError;
    /// `--layers`: `head`, `all`, or comma-separated state_dict name prefixes (`up3,up4,outc`).
    fn from_str(s: &str) -> Result<Self, ArgError> {
        match s {
            "head" => Ok(Layers::Head),
            "all" => Ok(Layers::All),
            _ => {
                let p: Vec<String> = s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                if p.is_empty() {
                    return fail(format!("--layers '{s}': expected head, all or name prefixes like up4,outc"));
                }
                Ok(Layers::Prefixes(p))
            }
        }
    }
}

impl FromStr for FitInit {
    type Err = ArgError;
    /// `--init`: `classical` or `unet:W.safetensors`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        match s.split_once(':') {
            None if s == "classical" => Ok(FitInit::Classical),
            Some(("unet", weights)) => Ok(FitInit::UNet(weights.into())),
            _ => fail(format!("--init '{s}': expected classical or unet:W.safetensors")),
        }
    }
}

impl FromStr for Problem {
    type Err = ArgError;
    /// `pinn bench PROBLEM`: `helmholtz`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        named(s, &[("helmholtz", Problem::Helmholtz)], || {
            format!("pinn bench '{s}': the available problem is helmholtz")
        })
    }
}

impl FromStr for Unwrap {
    type Err = ArgError;
    /// `--unwrap`: `per-pixel`, `weighted` or `robust`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let table = [Unwrap::PerPixel, Unwrap::Weighted, Unwrap::Robust].map(|u| (u.name(), u));
        named(s, &table, || format!("--unwrap '{s}': expected per-pixel, weighted or robust"))
    }
}

impl FromStr for Conv {
    type Err = ArgError;
    /// `--conv`: `direct`, `winograd` or `auto`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let table = Conv::ALL.map(|c| (c.name(), c));
        named(s, &table, || format!("--conv '{s}': expected direct, winograd or auto"))
    }
}

impl FromStr for Search {
    type Err = ArgError;
    /// `--search`: `pruned` or `exhaustive`.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let table = [Search::Pruned, Search::Exhaustive].map(|v| (v.name(), v));
        named(s, &table, || format!("--search '{s}': expected pruned or exhaustive"))
    }
}

impl FromStr for MinModulation {
    type Err = ArgError;
    /// `--min-modulation`: counts of B (`3`) or a fraction of the offset A (`0.05A`), not negative.
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let t = s.trim();
        let (number, of_a) = match t.strip_suffix(['A', 'a']) {
            Some(n) => (n, true),
            None => (t, false),
        };
        match number.trim().parse::<f32>() {
            Ok(v) if v.is_finite() && v >= 0.0 => {
                Ok(if of_a { MinModulation::OfOffset(v) } else { MinModulation::Counts(v) })
            }
            _ => fail(format!("--min-modulation '{s}': expected counts of B like 3, or a fraction of A like 0.05A")),
        }
    }
}

/// `--saturation`: a positive raw level (like 4095 for a 12-bit camera in u16 frames).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Saturation(pub f32);

impl FromStr for Saturation {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        match s.trim().parse::<f32>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Saturation(v)),
            _ => fail(format!("--saturation '{s}': expected a positive raw level like 4095")),
        }
    }
}

/// `--phase-steps`: `nominal` (360°·k/N), one list of steps in degrees for every laser
/// (`0,90,180,270`), or one list per laser separated by `;` (`0,90,180,270;0,91,179,272`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseStepsArg(pub PhaseSteps);

impl FromStr for PhaseStepsArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        if s.trim() == "nominal" {
            return Ok(PhaseStepsArg(PhaseSteps::Nominal));
        }
        let lists: Option<Vec<Vec<f64>>> = s
            .split(';')
            .map(|list| list.split(',').map(|v| v.trim().parse().ok().filter(|d: &f64| d.is_finite())).collect())
            .collect();
        lists.map(|l| PhaseStepsArg(PhaseSteps::from_degrees(l))).ok_or_else(|| {
            ArgError(format!(
                "--phase-steps '{s}': expected nominal, degrees like 0,90,180,270, or one list per laser like \
                 0,90,180,270;0,91,179,272"
            ))
        })
    }
}

impl fmt::Display for PhaseStepsArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lists = self.0.to_degrees();
        if lists.is_empty() {
            return f.write_str("nominal");
        }
        let text: Vec<String> =
            lists.iter().map(|d| d.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")).collect();
        f.write_str(&text.join(";"))
    }
}

/// `y,x,h,w` as four pixel counts.
fn rectangle(s: &str) -> Option<[usize; 4]> {
    let values: Option<Vec<usize>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
    values?.try_into().ok()
}

/// A patch of `kind` on the rectangle `y,x,h,w` that `flag` was given.
fn rectangle_patch(s: &str, flag: &str, kind: PatchKind) -> Result<Patch, ArgError> {
    let patch = rectangle(s).map(|region| Patch { kind, region });
    patch.ok_or_else(|| ArgError(format!("{flag} '{s}': expected y,x,h,w in pixels")))
}

/// `--dark y,x,h,w`: a rectangle without fringes (B = 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DarkPatch(pub Patch);

impl FromStr for DarkPatch {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        rectangle_patch(s, "--dark", PatchKind::Dark).map(DarkPatch)
    }
}

/// `--saturate y,x,h,w`: a rectangle whose buckets all clip at the type's maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SaturatePatch(pub Patch);

impl FromStr for SaturatePatch {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        rectangle_patch(s, "--saturate", PatchKind::Saturate).map(SaturatePatch)
    }
}

/// `--low-contrast y,x,h,w:F`: a rectangle whose modulation B is × F (0 ≤ F ≤ 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LowContrastPatch(pub Patch);

impl FromStr for LowContrastPatch {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        let parsed = s.split_once(':').and_then(|(r, f)| Some((rectangle(r)?, f.trim().parse::<f32>().ok()?)));
        match parsed {
            Some((region, f)) if (0.0..=1.0).contains(&f) => {
                Ok(LowContrastPatch(Patch { kind: PatchKind::LowContrast(f), region }))
            }
            _ => fail(format!("--low-contrast '{s}': expected y,x,h,w:F in pixels, with a factor 0 <= F <= 1 on B")),
        }
    }
}

/// `--preview-range`: `robust` (the 1st to 99th percentile), `full` (minimum to maximum) or
/// `LO,HI` percentiles (`0.1,99.9`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PreviewRangeArg(pub PreviewRange);

impl FromStr for PreviewRangeArg {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        match s {
            "robust" => Ok(PreviewRangeArg::default()),
            "full" => Ok(PreviewRangeArg(PreviewRange::Full)),
            _ => match pair::<f32>(s) {
                Some((lo, hi)) if 0.0 <= lo && lo < hi && hi <= 100.0 => {
                    Ok(PreviewRangeArg(PreviewRange::Percentiles { lo, hi }))
                }
                _ => fail(format!(
                    "--preview-range '{s}': expected robust (1st to 99th percentile), full (min to max) or \
                     percentiles LO,HI with 0 <= LO < HI <= 100"
                )),
            },
        }
    }
}

impl fmt::Display for PreviewRangeArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            p if p == PreviewRange::default() => f.write_str("robust"),
            PreviewRange::Full => f.write_str("full"),
            PreviewRange::Percentiles { lo, hi } => write!(f, "{lo},{hi}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_print_as_help_shows_them_and_parse_back() {
        assert_eq!(Wavelengths::default().to_string(), "5.0,5.5,6.05,6.655");
        assert_eq!(Wavelengths::default().to_string().parse::<Wavelengths>(), Ok(Wavelengths::default()));
        assert_eq!(Ab::default().to_string(), "128,100");
        assert_eq!(HeightRange((-100.0, 100.0)).to_string(), "-100,100");
        assert_eq!(SyntheticRange(Some((0.1, 2.4))).to_string(), "0.1,2.4");
        assert_eq!("full".parse::<SyntheticRange>(), Ok(SyntheticRange(None)));
        assert_eq!(" 0.1 , 2.4".parse::<HeightRange>(), Ok(HeightRange((0.1, 2.4))));
    }

    #[test]
    fn each_parser_accepts_its_forms_and_names_its_flag_on_error() {
        assert_eq!("auto".parse::<PrecisionArg>(), Ok(PrecisionArg(None)));
        assert_eq!("F16".parse::<PrecisionArg>(), Ok(PrecisionArg(Some(Precision::F16))));
        assert_eq!("1/255".parse::<InputScale>(), Ok(InputScale(1.0 / 255.0)));
        assert_eq!("step:10:0.5".parse::<Schedule>(), Ok(Schedule(LrSchedule::Step { step_size: 10, gamma: 0.5 })));
        assert_eq!("exp:0.9".parse::<Schedule>(), Ok(Schedule(LrSchedule::Exponential { gamma: 0.9 })));
        assert_eq!("UINT16".parse::<Dtype>(), Ok(Dtype(HostType::U16)));
        assert_eq!("3,4,5,6".parse::<Region>(), Ok(Region([3, 4, 5, 6])));
        assert_eq!("up3, outc".parse::<Layers>(), Ok(Layers::Prefixes(vec!["up3".into(), "outc".into()])));
        assert_eq!("unet:w.safetensors".parse::<FitInit>(), Ok(FitInit::UNet("w.safetensors".into())));
        assert_eq!("weighted".parse::<Unwrap>(), Ok(Unwrap::Weighted));
        assert_eq!("robust".parse::<Unwrap>(), Ok(Unwrap::Robust));
        assert_eq!("exhaustive".parse::<Search>(), Ok(Search::Exhaustive));
        assert_eq!("3".parse::<MinModulation>(), Ok(MinModulation::Counts(3.0)));
        assert_eq!(" 0.05A".parse::<MinModulation>(), Ok(MinModulation::OfOffset(0.05)));
        assert_eq!("nominal".parse::<PhaseStepsArg>(), Ok(PhaseStepsArg::default()));
        let shared = "0,90,180".parse::<PhaseStepsArg>().unwrap();
        assert!(matches!(&shared.0, PhaseSteps::Shared(d) if d.len() == 3));
        assert_eq!(shared.to_string(), "0,90,180");
        let per = "0,90,180,270; 0,91,179,272".parse::<PhaseStepsArg>().unwrap();
        assert!(matches!(&per.0, PhaseSteps::PerLaser(d) if d.len() == 2 && d[1].len() == 4));
        assert_eq!(PhaseStepsArg::default().to_string(), "nominal");
        assert_eq!("4095".parse::<Saturation>(), Ok(Saturation(4095.0)));
        assert_eq!(
            "1,2,3,4".parse::<DarkPatch>(),
            Ok(DarkPatch(Patch { kind: PatchKind::Dark, region: [1, 2, 3, 4] }))
        );
        assert_eq!("1,2,3,4".parse::<SaturatePatch>().unwrap().0.kind, PatchKind::Saturate);
        assert_eq!("1,2,3,4:0.25".parse::<LowContrastPatch>().unwrap().0.kind, PatchKind::LowContrast(0.25));
        assert_eq!("full".parse::<PreviewRangeArg>(), Ok(PreviewRangeArg(PreviewRange::Full)));
        assert_eq!(
            "0.5,99.5".parse::<PreviewRangeArg>(),
            Ok(PreviewRangeArg(PreviewRange::Percentiles { lo: 0.5, hi: 99.5 }))
        );
        for r in ["robust", "full", "0.5,99.5"] {
            assert_eq!(r.parse::<PreviewRangeArg>().unwrap().to_string(), r);
        }
        let errors = [
            ("--precision", "f64".parse::<PrecisionArg>().err()),
            ("--input-scale", "0".parse::<InputScale>().err()),
            ("--height-range", "1".parse::<HeightRange>().err()),
            ("or full", "x,1".parse::<SyntheticRange>().err()),
            ("--schedule", "step:x:1".parse::<Schedule>().err()),
            ("--dtype 'i32'", "I32".parse::<Dtype>().err()),
            ("--shape", "cube".parse::<SurfaceShape>().err()),
            ("--wavelengths", "5,x".parse::<Wavelengths>().err()),
            ("--ab", "1".parse::<Ab>().err()),
            ("--region", "1,2,3".parse::<Region>().err()),
            ("--loss", "l1".parse::<LossChoice>().err()),
            ("--layers", ",".parse::<Layers>().err()),
            ("--init", "foo".parse::<FitInit>().err()),
            ("helmholtz", "poisson".parse::<Problem>().err()),
            ("--unwrap", "spatial".parse::<Unwrap>().err()),
            ("--search", "all".parse::<Search>().err()),
            ("--min-modulation", "-1".parse::<MinModulation>().err()),
            ("--min-modulation", "0.1B".parse::<MinModulation>().err()),
            ("--phase-steps", "0,90,x".parse::<PhaseStepsArg>().err()),
            ("--saturation", "0".parse::<Saturation>().err()),
            ("--phase-steps", "0,90;".parse::<PhaseStepsArg>().err()),
            ("--dark", "1,2,3".parse::<DarkPatch>().err()),
            ("--saturate", "1,2,3,-4".parse::<SaturatePatch>().err()),
            ("--low-contrast", "1,2,3,4".parse::<LowContrastPatch>().err()),
            ("--low-contrast", "1,2,3,4:1.5".parse::<LowContrastPatch>().err()),
            ("--preview-range", "99,1".parse::<PreviewRangeArg>().err()),
        ];
        for (needle, e) in errors {
            let e = e.unwrap_or_else(|| panic!("{needle}: accepted"));
            assert!(e.0.contains(needle), "{needle}: {e}");
        }
    }
}

/// `--adapters`: the adapters many frames are spread over — `all` of the backend's, or indices
/// as `psi-gpu info` lists them (`0,1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adapters {
    All,
    Indices(Vec<usize>),
}

impl FromStr for Adapters {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, ArgError> {
        if s == "all" {
            return Ok(Adapters::All);
        }
        let indices: Option<Vec<usize>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
        match indices {
            Some(list) if !list.is_empty() && (1..list.len()).all(|i| !list[..i].contains(&list[i])) => {
                Ok(Adapters::Indices(list))
            }
            _ => Err(ArgError(format!("--adapters '{s}': expected all, or distinct adapter indices like 0,1"))),
        }
    }
}
