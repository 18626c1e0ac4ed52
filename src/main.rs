//! psi-gpu command line: parse the flags (`main/flags.rs`: the clap structs, their conversion
//! into each command's `Options`, and the refusal of flags the run would not use), run the
//! command (`psi_gpu::commands`), print its report. SIGINT and SIGTERM ask the run to stop at its
//! next check (`psi_gpu::error::interrupt`); a second one ends the process at once.

use std::error::Error as _;
use std::fmt::Display;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
use indicatif::{ProgressBar, ProgressStyle};
use psi_gpu::commands::args::{Adapters, ArgError};
use psi_gpu::commands::{bench, convert, demo, eval, finetune, generate, infer, infer_many, info, pinn, train};
use psi_gpu::error::interrupt;
use psi_gpu::gpu::{AdapterChoice, Gpu, GpuOptions};

#[path = "main/flags.rs"]
mod flags;

use flags::{Cli, Command, InferRun, PinnCommand};

fn main() -> ExitCode {
    if let Some((name, value)) = psi_gpu::gpu::quiet_display_probe_env() {
        // SAFETY: the first statement of `main`: no other thread exists that could read the
        // environment while it changes.
        unsafe { std::env::set_var(name, value) };
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = stop_on_signals() {
        return fail(anyhow::anyhow!("could not install the SIGINT/SIGTERM handlers: {e}"));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The flags; a bad one (or one the run would not use) is reported, and its exit code returned.
fn parse() -> std::result::Result<Cli, ExitCode> {
    let matches = Cli::command().try_get_matches().map_err(clap_error)?;
    let cli = Cli::from_arg_matches(&matches).map_err(clap_error)?;
    flags::refuse_unused(&cli.command, &matches).map_err(|unused| fail(unused.into()))?;
    Ok(cli)
}

/// A value our parsers rejected: their message alone, as every other error; clap's own errors
/// (unknown flags, `--help`) as clap prints them.
fn clap_error(e: clap::Error) -> ExitCode {
    match e.source().and_then(|s| s.downcast_ref::<ArgError>()) {
        Some(message) => fail(anyhow::anyhow!(message.clone())),
        None => e.exit(),
    }
}

/// SIGINT and SIGTERM store their number in the library's stop request; a second one exits at
/// once with 128 + its number (a run stuck in one GPU call can still be ended).
fn stop_on_signals() -> std::io::Result<()> {
    static ASKED: AtomicBool = AtomicBool::new(false);
    for signal in [interrupt::SIGINT, interrupt::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &ASKED)?;
        signal_hook::flag::register(signal, &ASKED)?;
        signal_hook::flag::register_usize(signal, interrupt::flag(), signal as usize)?;
    }
    Ok(())
}

/// One `error:` line on stderr; exit code 2, or 130/143 when a signal stopped the run.
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(e.downcast_ref::<psi_gpu::Error>().map_or(2, psi_gpu::Error::exit_code))
}

fn run(cli: Cli) -> Result<()> {
    let gpu_opts =
        GpuOptions { backend: cli.gpu.backend.clone(), adapter: cli.gpu.adapter.clone(), ..GpuOptions::from_env() };
    let gpu = || Gpu::new(&gpu_opts);
    match cli.command {
        Command::Info => show(info::run(&info::Options { backend: cli.gpu.backend })),
        Command::Infer(a) => match a.try_into()? {
            InferRun::One(opts) => {
                let gpu = gpu()?;
                show(with_bar(bar("tiles"), |b| infer::run(&gpu, &opts, position(b))))
            }
            InferRun::Many(opts, adapters) => {
                let gpus = match adapters {
                    None => vec![gpu()?],
                    Some(Adapters::All) => Gpu::all(&gpu_opts.backend)?,
                    Some(Adapters::Indices(list)) => list
                        .into_iter()
                        .map(|i| Gpu::new(&GpuOptions { adapter: Some(AdapterChoice::Index(i)), ..gpu_opts.clone() }))
                        .collect::<psi_gpu::Result<_>>()?,
                };
                infer_many_command(&gpus.iter().collect::<Vec<_>>(), &opts)
            }
        },
        Command::Eval(a) => show(eval::run(&a.into())),
        Command::Generate(a) => {
            let gpu = gpu()?;
            show(with_bar(bar("rows"), |b| generate::run(&gpu, &a.into(), position(b))))
        }
        Command::Demo(a) => show(demo::run(&gpu()?, &a.into())),
        Command::Bench(a) => show(bench::run(&gpu()?, &a.into())),
        Command::Convert(a) => show(convert::run(&a.into())),
        Command::Train(a) => show(train_command(&gpu()?, &a.into())),
        Command::Finetune(a) => show(finetune_command(&gpu()?, &a.into())),
        Command::Pinn(PinnCommand::Eval(a)) => show(pinn::eval(&gpu()?, &a.into())),
        Command::Pinn(PinnCommand::Fit(a)) => {
            let opts = a.try_into()?;
            show(pinn::fit(&gpu()?, &opts))
        }
        Command::Pinn(PinnCommand::Bench(a)) => show(pinn::bench(&gpu()?, &a.into())),
    }
}

/// Print a command's report.
fn show(report: psi_gpu::Result<impl Display>) -> Result<()> {
    println!("{}", report?);
    Ok(())
}

/// Many frames: a line per frame written, an `error:` line per frame skipped, exit 2 if any was.
fn infer_many_command(gpus: &[&Gpu], opts: &infer_many::Options) -> Result<()> {
    let bar = bar("tiles");
    let report = with_bar(bar, |bar| {
        infer_many::run(gpus, opts, |frame, frames, done, total| {
            bar.set_message(format!("frame {}/{frames}", frame + 1));
            position(bar)(done, total);
        })
    })?;
    println!("{report}");
    let failed: Vec<_> = report.failures().collect();
    for (_, why) in &failed {
        eprintln!("error: {why}");
    }
    match failed.len() {
        0 => Ok(()),
        n => Err(anyhow::anyhow!("{n} of {} frames were skipped; the others were written", report.frames.len())),
    }
}

fn train_command(gpu: &Gpu, opts: &train::Options) -> psi_gpu::Result<train::Report> {
    let bar = styled_bar("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}");
    with_bar(bar, |bar| {
        train::run(gpu, opts, |step, steps, (loss, data, smooth), lr| {
            position(bar)(step, steps);
            bar.set_message(format!("loss {loss:.4} (data {data:.4}, smoothness {smooth:.2e}) lr {lr:.2e}"));
        })
    })
}

fn finetune_command(gpu: &Gpu, opts: &finetune::Options) -> psi_gpu::Result<finetune::Report> {
    let bar = bar("evaluations");
    bar.set_length((opts.iterations * 5 / 4) as u64);
    with_bar(bar, |bar| finetune::run(gpu, opts, |evals, _| bar.set_position(evals as u64)))
}

/// Done/total, rate and ETA on a terminal; hidden when stderr is not one.
fn bar(unit: &str) -> ProgressBar {
    styled_bar(&format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"))
}

fn styled_bar(template: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// `f` with `bar`, which is cleared when `f` ends.
fn with_bar<R>(bar: ProgressBar, f: impl FnOnce(&ProgressBar) -> psi_gpu::Result<R>) -> psi_gpu::Result<R> {
    let result = f(&bar);
    bar.finish_and_clear();
    result
}

/// A `(done, total)` progress callback moving `bar`.
fn position(bar: &ProgressBar) -> impl Fn(usize, usize) + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}
