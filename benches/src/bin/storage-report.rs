//! Prints the storage figures as markdown: append throughput per durability policy and
//! record size against `fio` at the same block size and sync cadence, append → stored
//! latency under `always` with 1, 8 and 64 concurrent appenders against the disk's own
//! `fdatasync` latency, and sequential replay by several read strategies against
//! `memcpy`. Every append run is read back and checked; a run that loses, reorders or
//! corrupts a record makes the binary exit with status 1.
//!
//! ```sh
//! cargo run --release -p ringbroker-benches --bin storage-report -- \
//!     [--dir PATH] [--seconds 3] [--repeat 1] [--window 256] [--records-max N] \
//!     [--bytes-max N] [--replay-bytes N] [--latency-record-bytes 1024] [--groups-in-flight 2] \
//!     [--filter append-none] [--no-fio] [--quick]
//! ```
//!
//! `--quick`: tiny sizes, 0.2 s per case, no fio; the CI smoke run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringbroker::storage::LogConfig;
use ringbroker_benches::storage::append::{run_append, AppendCase, AppendRun};
use ringbroker_benches::storage::fio::{fio_version, FioJob, FioResult};
use ringbroker_benches::storage::replay::{run_replay, ReplayCase, ReplayRow, MEMCPY_ROW};
use ringbroker_benches::storage::{median, mount_of, sync_all, verify_log, Policy};

const USAGE: &str = "storage-report [--dir PATH] [--seconds 3] [--repeat 1] [--window 256]
    [--records-max 4000000] [--bytes-max 1073741824] [--replay-bytes 268435456]
    [--latency-record-bytes 1024] [--groups-in-flight 2] [--filter NAME] [--no-fio] [--quick]

  --dir      where to write (default: <target dir>/tmp, on the project's disk)
  --seconds  per case; --repeat: repetitions (medians are shown)
  --window   appends kept outstanding in the throughput table
  --groups-in-flight  the log's groups_in_flight_max (1: no write overlaps a sync)
  --filter   run only cases whose name contains NAME (append-none-16384, latency-8, replay)
  --quick    tiny sizes, 0.2 s per case, no fio: the CI smoke run";

/// Record sizes of the throughput table.
const RECORD_SIZES: [usize; 3] = [100, 1024, 16 * 1024];
/// Concurrent appenders of the latency table.
const APPENDERS: [usize; 3] = [1, 8, 64];
/// The log's default segment size: under `none` the only syncs are at rolls.
const SEGMENT_BYTES: u64 = 256 << 20;
/// Block size of fio's fdatasync latency baseline.
const FIO_SYNC_BLOCK: u64 = 4096;

#[derive(Debug, Clone)]
struct Options {
    dir: Option<PathBuf>,
    seconds: f64,
    repeat: usize,
    window: usize,
    records_max: u64,
    bytes_max: u64,
    replay_bytes: u64,
    latency_record_bytes: usize,
    groups_in_flight: usize,
    fio: bool,
    quick: bool,
    /// Run only the cases whose name (`append-none-16384`, `latency-8`, `replay`)
    /// contains this.
    filter: String,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            dir: None,
            seconds: 3.0,
            repeat: 1,
            window: 256,
            records_max: 4_000_000,
            bytes_max: 1 << 30,
            replay_bytes: SEGMENT_BYTES,
            latency_record_bytes: 1024,
            groups_in_flight: LogConfig::default().groups_in_flight_max,
            fio: true,
            quick: false,
            filter: String::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
            match flag.as_str() {
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                "--seconds" => o.seconds = num(value()?)?,
                "--repeat" => o.repeat = num(value()?)? as usize,
                "--window" => o.window = num(value()?)? as usize,
                "--records-max" => o.records_max = num(value()?)? as u64,
                "--bytes-max" => o.bytes_max = num(value()?)? as u64,
                "--replay-bytes" => o.replay_bytes = num(value()?)? as u64,
                "--latency-record-bytes" => o.latency_record_bytes = num(value()?)? as usize,
                "--groups-in-flight" => o.groups_in_flight = num(value()?)? as usize,
                "--filter" => o.filter = value()?,
                "--no-fio" => o.fio = false,
                "--quick" => o.quick = true,
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if o.quick {
            o = Options {
                seconds: 0.2,
                repeat: 1,
                window: o.window.min(64),
                records_max: 20_000,
                bytes_max: 16 << 20,
                replay_bytes: 8 << 20,
                fio: false,
                ..o
            };
        }
        o.repeat = o.repeat.clamp(1, 100);
        o.seconds = o.seconds.clamp(0.01, 600.0);
        Ok(o)
    }

    fn wants(&self, case: &str) -> bool {
        case.contains(&self.filter)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// Where the report runs, and what it found out about the machine.
struct Setup {
    root: PathBuf,
    fio: Option<String>,
    /// fio command lines of the last repetition, for the report's "commands" list.
    commands: Vec<String>,
    failures: Vec<String>,
    /// When the report started (progress lines on stderr say how long cases take).
    started: std::time::Instant,
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(error) => {
            eprintln!("storage-report: {error}");
            std::process::exit(2);
        }
    };
    let mut setup = match prepare(&options) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("storage-report: {error}");
            std::process::exit(2);
        }
    };
    throughput_section(&options, &mut setup);
    latency_section(&options, &mut setup);
    replay_section(&options, &mut setup);
    commands_section(&setup);
    if let Err(error) = std::fs::remove_dir_all(&setup.root) {
        eprintln!("cannot remove {}: {error}", setup.root.display());
    }
    if !setup.failures.is_empty() {
        eprintln!("storage-report FAILED:");
        for failure in &setup.failures {
            eprintln!("  {failure}");
        }
        std::process::exit(1);
    }
}

/// Creates the run directory and prints the machine and settings.
fn prepare(options: &Options) -> Result<Setup, String> {
    let base = match &options.dir {
        Some(dir) => dir.clone(),
        None => default_base()?,
    };
    let root = base.join(format!("storage-report-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let fio = if options.fio { fio_version() } else { None };
    println!("# Storage report\n");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = ringbroker_benches::report::first_line_with("/proc/cpuinfo", "model name")
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("- machine: {cores} cores ({cpu}), Linux {}", kernel.trim());
    match mount_of(&root) {
        Some((mount, fs, dev)) => {
            println!(
                "- directory: `{}` on {dev} ({fs}, mounted at {})",
                root.display(),
                mount.display()
            );
            if fs == "tmpfs" || fs == "ramfs" {
                println!("- **warning: {fs} is memory, not a disk; pass --dir on a real disk**");
            }
        }
        None => println!("- directory: `{}` (filesystem unknown)", root.display()),
    }
    println!(
        "- per case: {} s, at most {} records and {} MiB; {} repetition(s); medians shown",
        options.seconds,
        options.records_max,
        options.bytes_max >> 20,
        options.repeat
    );
    println!(
        "- log: {} group(s) in flight at most",
        options.groups_in_flight
    );
    match (&fio, options.fio) {
        (Some(v), _) => println!("- baseline: {v}"),
        (None, true) => println!(
            "- baseline: **fio is not installed; fio columns skipped.** Install it with \
             `apt-get install -y fio` (Debian/Ubuntu) or `dnf install fio`, or run \
             `scripts/bench-storage`."
        ),
        (None, false) => println!("- baseline: fio not run (--no-fio or --quick)"),
    }
    Ok(Setup {
        root,
        fio,
        commands: Vec::new(),
        failures: Vec::new(),
        started: std::time::Instant::now(),
    })
}

/// `<target dir>/tmp`: the binary lives in `<target>/<profile>/`, on the project's
/// disk (unlike `/tmp`, which may be memory).
fn default_base() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory; pass --dir")?;
    Ok(target.join("tmp"))
}

/// fio's results for one case: `[io_uring, psync]`.
type FioPair = [Option<FioResult>; 2];
/// fio's I/O engines, in `FioPair` order: io_uring with one op in flight (the log's
/// model), and plain `pwrite` + `fdatasync` syscalls (no worker-thread hand-off).
const FIO_ENGINES: [&str; 2] = ["io_uring", "psync"];

/// One append case (run, read back, clean up) and fio with the same pattern, back to
/// back. Which goes first alternates with each repetition of a case (`previous` is its
/// last run; fio going first copies that run's pattern): the second of a pair reuses
/// page-cache pages the first just freed, which on this VM are faster to write than
/// pages the host has to back again.
fn append_with_fio(
    options: &Options,
    setup: &mut Setup,
    case: AppendCase,
    tag: &str,
    previous: Option<&AppendRun>,
) -> Option<(AppendRun, FioPair)> {
    let fio_first = match previous {
        Some(previous) if setup.fio.is_some() && previous.repetition % 2 == 0 => {
            Some(fio_like(options, setup, previous))
        }
        _ => None,
    };
    let dir = setup.root.join(tag);
    let run = run_append(&dir, case).and_then(|run| {
        verify_log(&dir, run.records, case.record_bytes)?;
        Ok(run)
    });
    let _ = std::fs::remove_dir_all(&dir);
    sync_all();
    let mut run = match run {
        Ok(run) => run,
        Err(error) => {
            setup.failures.push(format!("{tag}: {error}"));
            return None;
        }
    };
    run.repetition = previous.map_or(0, |p| p.repetition + 1);
    let fio = match fio_first {
        Some(fio) => fio,
        None if setup.fio.is_some() => fio_like(options, setup, &run),
        None => [None, None],
    };
    Some((run, fio))
}

/// fio with the run's pattern, under each engine: `--bs` = the mean group, one
/// `fdatasync` per write when every group syncs; under `none`, one per segment's
/// worth of writes if the run rolled (a roll syncs the sealed segment), else none.
fn fio_like(options: &Options, setup: &mut Setup, run: &AppendRun) -> FioPair {
    let block = run.group_bytes_mean().max(1);
    let fdatasync_every = match (run.case.policy.syncs_groups(), run.segments > 1) {
        (true, _) => 1,
        (false, true) => (SEGMENT_BYTES / block).max(1),
        (false, false) => 0,
    };
    FIO_ENGINES.map(|engine| {
        let job = FioJob {
            block_bytes: block,
            size_bytes: run
                .log_bytes()
                .max(block * 16)
                .min(options.bytes_max.max(block)),
            fdatasync_every,
            runtime: options.duration(),
            engine,
        };
        run_fio(setup, &job)
    })
}

fn run_fio(setup: &mut Setup, job: &FioJob) -> Option<FioResult> {
    let dir = setup.root.join("fio");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        setup.failures.push(format!("fio dir: {error}"));
        return None;
    }
    let result = job.run(&dir);
    setup.commands.push(job.command_line(&dir));
    sync_all();
    match result {
        Ok(r) => Some(r),
        Err(error) => {
            eprintln!("fio ({}): {error}", job.engine);
            None
        }
    }
}

/// Per-repetition samples of one table row.
#[derive(Default)]
struct Samples {
    runs: Vec<AppendRun>,
    fio: Vec<FioPair>,
    /// fio's 4 KiB fdatasync latency (psync), per repetition (latency table only).
    fio_sync: Vec<Option<FioResult>>,
}

impl Samples {
    /// fio's `fdatasync` p99 in the psync run of the case's own cadence (a sync after
    /// each write of the mean group), as a cell in µs, and our p99 over it per run.
    fn group_sync_p99(&self) -> (String, Vec<f64>) {
        let pairs: Vec<(f64, f64)> = self
            .runs
            .iter()
            .zip(&self.fio)
            .filter_map(|(run, pair)| {
                pair[1]
                    .and_then(|f| f.sync_ns)
                    .map(|p| (run.latency_us(0.99), p[1] / 1e3))
            })
            .collect();
        let disk: Vec<f64> = pairs.iter().map(|(_, d)| *d).collect();
        let ratios = pairs.iter().map(|(ours, d)| ours / d).collect();
        (opt(median(&disk), 0), ratios)
    }

    fn med(&self, f: impl Fn(&AppendRun) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// fio's median MB/s under engine `e` (index into `FIO_ENGINES`).
    fn fio_mb_s(&self, e: usize) -> f64 {
        let bw: Vec<f64> = self
            .fio
            .iter()
            .filter_map(|pair| pair[e])
            .map(|r| r.write_bytes_per_s / 1e6)
            .collect();
        median(&bw)
    }

    /// Our log MB/s over fio's MB/s under engine `e`, per repetition (each pair ran
    /// back to back).
    fn ratios(&self, e: usize) -> Vec<f64> {
        self.ratios_where(e, |_| true)
    }

    /// As `ratios`, for the repetitions `keep` accepts (by repetition index).
    fn ratios_where(&self, e: usize, keep: impl Fn(usize) -> bool) -> Vec<f64> {
        self.runs
            .iter()
            .zip(&self.fio)
            .filter(|(run, _)| keep(run.repetition))
            .filter_map(|(run, pair)| {
                pair[e].map(|f| run.log_mb_per_s() / (f.write_bytes_per_s / 1e6))
            })
            .collect()
    }

    /// "fio io_uring MB/s | log ÷ it | fio psync MB/s | log ÷ it" cells; each ratio
    /// cell also gives the medians of the repetitions where the log ran first (even)
    /// and where fio did (odd).
    fn fio_cells(&self, decimals: usize) -> String {
        let cells: Vec<String> = (0..FIO_ENGINES.len())
            .map(|e| {
                let first = median(&self.ratios_where(e, |r| r % 2 == 0));
                let second = median(&self.ratios_where(e, |r| r % 2 == 1));
                format!(
                    "{} | {}; log first {} / fio first {}",
                    opt(self.fio_mb_s(e), decimals),
                    ratio_cell(&self.ratios(e)),
                    opt(first, 2),
                    opt(second, 2),
                )
            })
            .collect();
        cells.join(" | ")
    }

    fn fio_cadence(&self) -> String {
        let Some(run) = self.runs.last() else {
            return String::new();
        };
        let sync = match (run.case.policy.syncs_groups(), run.segments > 1) {
            (true, _) => "1".to_owned(),
            (false, true) => format!("{}", (SEGMENT_BYTES / run.group_bytes_mean().max(1)).max(1)),
            (false, false) => "–".to_owned(),
        };
        let block = bytes(self.med(|r| r.group_bytes_mean() as f64));
        format!("{block} / {sync}")
    }
}

fn throughput_section(options: &Options, setup: &mut Setup) {
    let wanted = Policy::ALL.iter().any(|p| {
        RECORD_SIZES
            .iter()
            .any(|s| options.wants(&format!("append-{}-{s}", p.name())))
    });
    if !wanted {
        return;
    }
    println!(
        "\n## Append throughput: one shard, {} appends outstanding\n",
        options.window
    );
    let mut rows: Vec<((Policy, usize), Samples)> = Policy::ALL
        .iter()
        .flat_map(|&p| {
            RECORD_SIZES
                .iter()
                .map(move |&s| ((p, s), Samples::default()))
        })
        .collect();
    for rep in 0..options.repeat {
        for ((policy, size), samples) in &mut rows {
            let case = AppendCase {
                policy: *policy,
                record_bytes: *size,
                window: options.window,
                duration: options.duration(),
                records_max: options.records_max,
                bytes_max: options.bytes_max,
                groups_in_flight: options.groups_in_flight,
            };
            let name = format!("append-{}-{size}", policy.name());
            run_case(options, setup, case, &name, rep, samples);
        }
    }
    print_throughput(&rows);
}

/// Runs one repetition of the case `name` (unless `--filter` leaves it out) with its
/// fio comparison, adding both to `samples`; returns whether it ran.
fn run_case(
    options: &Options,
    setup: &mut Setup,
    case: AppendCase,
    name: &str,
    rep: usize,
    samples: &mut Samples,
) -> bool {
    if !options.wants(name) {
        return false;
    }
    let tag = format!("{name}-{rep}");
    eprintln!(
        "running {tag} at {:.1} s",
        setup.started.elapsed().as_secs_f64()
    );
    let previous = samples.runs.last();
    if let Some((run, fio)) = append_with_fio(options, setup, case, &tag, previous) {
        samples.runs.push(run);
        samples.fio.push(fio);
    }
    true
}

fn print_throughput(rows: &[((Policy, usize), Samples)]) {
    println!(
        "| policy | record | records/s | payload MB/s | log MB/s | groups | appends/group | \
         fio bs / fdatasync every | fio io_uring MB/s | log ÷ fio io_uring (min–max) | \
         fio psync MB/s | log ÷ fio psync (min–max) | enters/group | segments | \
         latency p99 / max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((policy, size), s) in rows {
        if s.runs.is_empty() {
            let size = bytes(*size as f64);
            println!(
                "| {} | {size} | not run (filtered) or failed: see stderr |",
                policy.name()
            );
            continue;
        }
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {} | {} | {:.2} | {:.0} | {:.1} / {:.1} |",
            policy.name(),
            bytes(*size as f64),
            s.med(AppendRun::records_per_s),
            s.med(AppendRun::payload_mb_per_s),
            s.med(AppendRun::log_mb_per_s),
            s.med(|r| r.groups as f64),
            s.med(AppendRun::appends_per_group),
            s.fio_cadence(),
            s.fio_cells(1),
            s.med(|r| r.uring_enters as f64 / r.groups.max(1) as f64),
            s.med(|r| r.segments as f64),
            s.med(|r| r.latency_us(0.99)) / 1e3,
            s.med(|r| r.latency_us(1.0)) / 1e3,
        );
    }
    println!(
        "\nSame sync cadence: fio writes sequentially with `--bs` = the log's mean group \
         (bytes written ÷ groups, median over repetitions) and one `fdatasync` per write \
         under `always` and `batch` (the log syncs once per group); under `none` none, \
         unless the log rolled (a roll syncs the sealed {} MiB segment, so fio syncs once \
         per that many bytes). `--iodepth=1`: one write or sync in flight, as the log \
         keeps one group in flight; `io_uring` is the log's I/O model, `psync` the \
         cheapest path for small writes. `batch` = {} ms or {} KiB. log MB/s counts batch \
         headers and record framing (what the disk takes); the ratios compare those bytes, \
         per repetition, and show the median (min–max), then the medians of the \
         repetitions where the log ran first and where fio ran first (the second of a \
         pair reuses the page-cache pages the first freed, which on this VM can be several \
         times faster to write; use an even --repeat so both orders count equally).",
        SEGMENT_BYTES >> 20,
        ringbroker_benches::storage::BATCH_DELAY.as_millis(),
        ringbroker_benches::storage::BATCH_BYTES >> 10,
    );
}

fn latency_section(options: &Options, setup: &mut Setup) {
    if !APPENDERS
        .iter()
        .any(|n| options.wants(&format!("latency-{n}")))
    {
        return;
    }
    let size = options.latency_record_bytes;
    println!(
        "\n## Append → stored latency under `always`, {} records, N appends outstanding\n",
        bytes(size as f64)
    );
    let mut rows: Vec<(usize, Samples)> =
        APPENDERS.iter().map(|&n| (n, Samples::default())).collect();
    for rep in 0..options.repeat {
        for (appenders, samples) in &mut rows {
            let case = AppendCase {
                policy: Policy::Always,
                record_bytes: size,
                window: *appenders,
                duration: options.duration(),
                records_max: options.records_max,
                bytes_max: options.bytes_max,
                groups_in_flight: options.groups_in_flight,
            };
            let name = format!("latency-{appenders}");
            if !run_case(options, setup, case, &name, rep, samples) {
                continue;
            }
            if setup.fio.is_some() {
                let sync = fio_sync_latency(options, setup);
                samples.fio_sync.push(sync);
            }
        }
    }
    print_latency(&rows);
}

/// The disk's own `fdatasync` latency: 4 KiB sequential appends, one `fdatasync`
/// syscall after each (psync: no io_uring worker hand-off in the figure).
fn fio_sync_latency(options: &Options, setup: &mut Setup) -> Option<FioResult> {
    let job = FioJob {
        block_bytes: FIO_SYNC_BLOCK,
        size_bytes: options.bytes_max.min(256 << 20),
        fdatasync_every: 1,
        runtime: options.duration(),
        engine: "psync",
    };
    run_fio(setup, &job)
}

fn print_latency(rows: &[(usize, Samples)]) {
    println!(
        "| appenders | appends/s | log MB/s | groups | appends/group | p50 µs | p99 µs | \
         p999 µs | fio io_uring MB/s | log ÷ fio io_uring | fio psync MB/s | log ÷ fio psync | \
         disk fdatasync p50 / p99 / p999 µs | our p99 ÷ disk fdatasync p99 | \
         disk fdatasync p99 after a group-sized write | our p99 ÷ that |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (appenders, s) in rows {
        if s.runs.is_empty() {
            println!("| {appenders} | not run (filtered) or failed: see stderr |");
            continue;
        }
        let sync = |i: usize| {
            let v: Vec<f64> = s
                .fio_sync
                .iter()
                .flatten()
                .filter_map(|r| r.sync_ns.map(|p| p[i] / 1e3))
                .collect();
            opt(median(&v), 0)
        };
        let p99_ratios: Vec<f64> = s
            .runs
            .iter()
            .zip(&s.fio_sync)
            .filter_map(|(run, f)| {
                f.and_then(|f| f.sync_ns)
                    .map(|p| run.latency_us(0.99) / (p[1] / 1e3))
            })
            .collect();
        let (group_sync, group_ratios) = s.group_sync_p99();
        println!(
            "| {appenders} | {:.0} | {:.2} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} / {} / {} | {} | {} µs | {} |",
            s.med(AppendRun::records_per_s),
            s.med(AppendRun::log_mb_per_s),
            s.med(|r| r.groups as f64),
            s.med(AppendRun::appends_per_group),
            s.med(|r| r.latency_us(0.50)),
            s.med(|r| r.latency_us(0.99)),
            s.med(|r| r.latency_us(0.999)),
            s.fio_cells(2),
            sync(0),
            sync(1),
            sync(2),
            ratio_cell(&p99_ratios),
            group_sync,
            ratio_cell(&group_ratios),
        );
    }
    println!(
        "\nLatency is from the `ShardLog::append` call to its `Stored` callback. Each \
         callback issues the next append at once (a closed loop of N appenders). The fio \
         MB/s columns run the case's own cadence (`--bs` = mean group bytes, one \
         `fdatasync` per write). The disk's own `fdatasync` latency is fio's \
         `--bs=4096 --fdatasync=1 --ioengine=psync`, measured next to each case; the goal \
         is our p99 within 2× its p99. A group of N appends writes N records before its \
         sync, so the last two columns also give fio's `fdatasync` p99 when each sync \
         follows a write of the log's mean group (the psync run of the case's cadence)."
    );
}

fn replay_section(options: &Options, setup: &mut Setup) {
    if !options.wants("replay") {
        return;
    }
    let case = ReplayCase {
        segment_bytes: options.replay_bytes,
        record_bytes: 1024,
        records_per_batch: 16,
        read_bytes: 1 << 20,
        passes_max: if options.quick { 2 } else { 7 },
        budget: Duration::from_secs_f64(options.seconds * 2.0),
    };
    println!(
        "\n## Sequential replay of one {} segment (1 KiB records, 16 per batch, 1 MiB reads), page cache warm\n",
        bytes(case.segment_bytes as f64)
    );
    eprintln!(
        "running replay at {:.1} s",
        setup.started.elapsed().as_secs_f64()
    );
    let dir = setup.root.join("replay");
    let rows = run_replay(&dir, case);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            setup.failures.push(format!("replay: {error}"));
            println!("replay failed: {error}");
            return;
        }
    };
    print_replay(&rows);
}

fn print_replay(rows: &[ReplayRow]) {
    let memcpy = rows
        .iter()
        .find(|r| r.name == MEMCPY_ROW)
        .map_or(f64::NAN, |r| median(&r.gb_per_s));
    println!("| strategy | GB/s (median) | passes: min–max | ÷ memcpy |");
    println!("|---|---|---|---|");
    for row in rows {
        let med = median(&row.gb_per_s);
        let min = row.gb_per_s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.gb_per_s.iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {med:.2} | {min:.2}–{max:.2} ({} passes) | {:.2} |",
            row.name,
            row.gb_per_s.len(),
            med / memcpy
        );
    }
    println!(
        "\n\"+ decode\": every batch goes through `codec::decode_batch` (header, xxh3 \
         checksum, every record) and every record is visited. \"+ frame by headers only\": \
         `peek_header` per batch, as a broker that sends stored batches on unchanged needs \
         (for a map, the record bytes are then never touched by the CPU). Every pass must \
         cover every record of the segment. GB/s counts segment bytes. The segment was just \
         written, so its pages are in the page cache: this measures the read path, not the \
         disk."
    );
}

fn commands_section(setup: &Setup) {
    if setup.commands.is_empty() {
        return;
    }
    println!("\n## fio commands run (directory shown is the run's)\n\n```sh");
    let mut seen = std::collections::BTreeSet::new();
    for line in &setup.commands {
        if seen.insert(line) {
            println!("{line}");
        }
    }
    println!("```");
}

fn ratio_cell(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "–".to_owned();
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(0.0, f64::max);
    format!("**{:.2}** ({min:.2}–{max:.2})", median(ratios))
}

fn opt(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else {
        format!("{value:.decimals$}")
    }
}

fn bytes(n: f64) -> String {
    if n >= 1048576.0 {
        format!("{:.1} MiB", n / 1048576.0)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}
