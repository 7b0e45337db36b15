//! `ringbrokerd bench <scenario> [options]`: the load generator.
//!
//! Owns: the order of a run (parse and bound the flags, open the target broker, run the
//! scenario, close the broker, report) and its exit status: 0 only when every message
//! the run measured was verified. Modules, one concern each: `options` (flags, bounds),
//! `target` (embedded or remote broker), `payload` (the stamp every message carries),
//! `flow` (bounds, pacing, when a run ends), `phase` (threads and the consume loop),
//! `produce` (producer loops), `scenarios`, `verify`, `record` (histograms, timeline,
//! CPU time), `report` (table and JSON), `plot` (SVG).
//!
//! Never: reports a throughput for a run that lost, duplicated, misrouted or reordered
//! messages as if it had passed; leaves threads running after it returns.

mod flow;
mod options;
mod payload;
mod phase;
mod plot;
mod produce;
mod record;
mod report;
mod scenarios;
mod target;
mod verify;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use self::options::BenchCli;
use self::report::Report;
use self::target::Target;

/// Exit status when verification failed or the run could not be made.
const EXIT_FAILED: u8 = 1;
/// Exit status for a bad flag.
const EXIT_USAGE: u8 = 2;
/// The log filter on stderr unless `RUST_LOG` says otherwise: the engine's warnings.
const LOG_FILTER: &str = "warn";

/// Why a run could not be made (as opposed to a run that failed verification).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag out of its bounds.
    #[error("{flag}: {why}")]
    Usage {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
    /// `--data-dir` names an existing directory (the run would remove it afterwards).
    #[error("data directory {0:?} exists; bench wants a new one, as it removes it afterwards")]
    DataDirExists(PathBuf),
    /// The embedded broker failed to open or stop.
    #[error("embedded broker: {0}")]
    Broker(String),
    /// The remote broker cannot be reached.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// Declaring what a scenario needs failed.
    #[error("setup: {0}")]
    Setup(String),
    /// A file could not be written or removed.
    #[error("{0:?}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The chart could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(String),
}

/// Entry point: `args` are the words after `ringbrokerd`, starting with `bench`.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match BenchCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            // clap formats help and errors itself; if stdout is gone there is no one
            // to tell.
            let _ = error.print();
            return ExitCode::from(if usage { EXIT_USAGE } else { 0 });
        }
    };
    // Engine warnings (a dropped batch, a slow disk) belong next to the figures.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| LOG_FILTER.to_owned());
    if let Err(error) = crate::init_logging(&filter) {
        eprintln!("ringbrokerd bench: cannot set up logging: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILED),
        Err(error @ BenchError::Usage { .. }) => {
            eprintln!("ringbrokerd bench: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("ringbrokerd bench: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs and reports; `Ok(passed)`.
fn run(cli: BenchCli) -> Result<bool, BenchError> {
    let plan = cli.plan()?;
    let target = Target::open(&plan)?;
    let outcome = scenarios::run(&scenarios::Ctx::new(&plan, &target));
    let report = outcome.map(|o| Report::new(&plan, &target, o));
    let closed = target.close();
    let report = report?;
    closed?;
    let mut out = std::io::stdout().lock();
    let written = match plan.json {
        true => report
            .json()
            .map_err(|e| e.to_string())
            .and_then(|j| writeln!(out, "{j}").map_err(|e| e.to_string())),
        false => report.write_table(&mut out).map_err(|e| e.to_string()),
    };
    written.map_err(BenchError::Output)?;
    if let Some(path) = &plan.plot {
        plot::draw(&report, path)?;
    }
    Ok(report.passed)
}
