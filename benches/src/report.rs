//! What every report binary (`stream-report`, `queue-report`, ...) does around its
//! cases: the run directory, the machine and data-disk lines at the top, and the
//! closing verdict (exit 1 when any check failed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::storage::mount_of;

/// Creates `<base or the temp dir>/<report>-<pid>` for the run's data.
pub fn run_dir(base: Option<&Path>, report: &str) -> Result<PathBuf, String> {
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let root = base.join(format!("{report}-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    Ok(root)
}

/// Prints the machine line (cores, CPU model, kernel) and where `root` lives.
pub fn print_machine(root: &Path) {
    println!("- machine: {}", machine());
    match mount_of(root) {
        Some((mount, fs, dev)) => println!(
            "- data: `{}` on {dev} ({fs}, mounted at {})",
            root.display(),
            mount.display()
        ),
        None => println!("- data: `{}` (filesystem unknown)", root.display()),
    }
}

/// "N cores (CPU model), Linux <release>".
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

/// The value after `:` on the first line of `path` starting with `prefix`.
pub fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split(':').nth(1)?.trim().to_owned())
}

/// Removes the run directory, prints the time taken, and exits 1 listing `failures`
/// if there are any.
pub fn finish(report: &str, root: &Path, started: Instant, failures: &[String]) {
    if let Err(error) = std::fs::remove_dir_all(root) {
        eprintln!("cannot remove {}: {error}", root.display());
    }
    eprintln!("{report} took {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        eprintln!("{report} FAILED:");
        for failure in failures {
            eprintln!("  {failure}");
        }
        std::process::exit(1);
    }
}

/// An embedded engine for one case: a runtime and the model opened on it.
pub struct Engine<M> {
    /// The runtime.
    pub rt: ringbroker::runtime::Runtime,
    /// The model (`Streams`, `Queues`, ...).
    pub model: M,
}

impl<M> Engine<M> {
    /// Starts a runtime of `shards` shards and opens the model on it with `open`
    /// (`what` names it in errors).
    pub fn start<E: std::fmt::Display>(
        shards: usize,
        what: &str,
        open: impl FnOnce(ringbroker::runtime::RuntimeHandle) -> Result<M, E>,
    ) -> Result<Self, String> {
        let rt = ringbroker::runtime::Runtime::start(ringbroker::runtime::RuntimeConfig {
            shards: Some(shards),
            shutdown_drain_max: std::time::Duration::from_secs(10),
            ..ringbroker::runtime::RuntimeConfig::default()
        })
        .map_err(|e| format!("runtime: {e}"))?;
        match open(rt.handle()) {
            Ok(model) => Ok(Self { rt, model }),
            Err(error) => {
                let _ = rt.shutdown();
                Err(format!("open {what}: {error}"))
            }
        }
    }

    /// Shuts the runtime down; an error if it had to drop work or a task panicked.
    pub fn stop(self) -> Result<(), String> {
        drop(self.model);
        let report = self.rt.shutdown().map_err(|e| format!("shutdown: {e}"))?;
        if report.forced || report.tasks_panicked > 0 {
            return Err(format!("unclean shutdown: {report:?}"));
        }
        Ok(())
    }
}
