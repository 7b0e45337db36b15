//! `fio` as the disk's baseline: one sequential-write job, run as a child process, with
//! the block size and sync cadence of the log workload it is compared with.
//!
//! Owns: building fio's command line and reading its JSON result. Never: runs fio
//! without a time bound (`--runtime`) and a size bound (`--size`), or leaves its file
//! behind (`--unlink=1`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::json::{self, Value};

/// The name of fio's data file inside the job directory.
const FIO_FILE: &str = "fio-seq.dat";

/// One fio sequential-write job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FioJob {
    /// `--bs`: bytes per write (the log's mean group, or one append's batch).
    pub block_bytes: u64,
    /// `--size`: the most bytes written.
    pub size_bytes: u64,
    /// `--fdatasync`: one `fdatasync` every this many writes; 0 for none.
    pub fdatasync_every: u64,
    /// `--runtime`: the longest the job runs.
    pub runtime: Duration,
    /// `--ioengine`: `io_uring` (one write or sync in flight, like the log's one group),
    /// or `psync`.
    pub engine: &'static str,
}

/// What fio measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FioResult {
    /// `jobs[0].write.bw_bytes`: write bandwidth, bytes/s.
    pub write_bytes_per_s: f64,
    /// `jobs[0].write.total_ios`: writes done.
    pub writes: f64,
    /// `jobs[0].sync.lat_ns.N`: syncs done.
    pub syncs: f64,
    /// `jobs[0].sync.lat_ns.percentile`: p50, p99, p99.9 of `fdatasync`, ns (if any).
    pub sync_ns: Option<[f64; 3]>,
}

/// fio's version line, or `None` if fio is not installed.
pub fn fio_version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl FioJob {
    /// fio's arguments for this job, writing in `dir`.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--name=seq".to_owned(),
            "--rw=write".to_owned(),
            format!("--bs={}", self.block_bytes.max(1)),
            format!("--size={}", self.size_bytes.max(self.block_bytes).max(1)),
            format!("--runtime={}ms", self.runtime.as_millis().max(1)),
            format!("--ioengine={}", self.engine),
            "--iodepth=1".to_owned(),
            // Extend the file as it is written, as the log does (no preallocation).
            "--fallocate=none".to_owned(),
            format!("--directory={}", dir.display()),
            format!("--filename={FIO_FILE}"),
            "--unlink=1".to_owned(),
            "--output-format=json".to_owned(),
        ];
        if self.fdatasync_every > 0 {
            args.push(format!("--fdatasync={}", self.fdatasync_every));
        }
        args
    }

    /// The command line as a shell would take it (for the report).
    pub fn command_line(&self, dir: &Path) -> String {
        format!("fio {}", self.args(dir).join(" "))
    }

    /// Runs the job in `dir` and reads its result.
    pub fn run(&self, dir: &Path) -> Result<FioResult, String> {
        let _ = std::fs::remove_file(dir.join(FIO_FILE));
        let out = Command::new("fio")
            .args(self.args(dir))
            .output()
            .map_err(|e| format!("cannot run fio: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("fio failed ({}): {stderr}{stdout}", out.status));
        }
        parse_result(&stdout)
    }
}

/// Reads the figures of `jobs[0]` from fio's JSON output.
pub fn parse_result(text: &str) -> Result<FioResult, String> {
    let root = json::parse(text)?;
    let job = root
        .get("jobs")
        .and_then(|j| j.at(0))
        .ok_or("fio output has no jobs[0]")?;
    if let Some(error) = job.get("error").and_then(Value::number) {
        if error != 0.0 {
            return Err(format!("fio job error {error}"));
        }
    }
    let number = |v: Option<&Value>| v.and_then(Value::number);
    let write = job.get("write");
    let write_bytes_per_s = number(write.and_then(|w| w.get("bw_bytes")))
        .ok_or("fio output has no jobs[0].write.bw_bytes")?;
    let writes = number(write.and_then(|w| w.get("total_ios"))).unwrap_or(0.0);
    // fio 3.33 leaves `sync.total_ios` at 0; `sync.lat_ns.N` counts the syncs.
    let sync_lat = job.get("sync").and_then(|s| s.get("lat_ns"));
    let syncs = number(sync_lat.and_then(|l| l.get("N"))).unwrap_or(0.0);
    let percentile = sync_lat.and_then(|l| l.get("percentile"));
    let at = |key: &str| number(percentile.and_then(|p| p.get(key)));
    let sync_ns = match (at("50.000000"), at("99.000000"), at("99.900000")) {
        (Some(p50), Some(p99), Some(p999)) if syncs > 0.0 => Some([p50, p99, p999]),
        _ => None,
    };
    Ok(FioResult {
        write_bytes_per_s,
        writes,
        syncs,
        sync_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_matches_the_cadence() {
        let job = FioJob {
            block_bytes: 4096,
            size_bytes: 1 << 20,
            fdatasync_every: 1,
            runtime: Duration::from_secs(3),
            engine: "io_uring",
        };
        let line = job.command_line(Path::new("/d"));
        assert!(
            line.contains("--bs=4096 --size=1048576 --runtime=3000ms"),
            "{line}"
        );
        assert!(line.ends_with("--fdatasync=1"), "{line}");
        let none = FioJob {
            fdatasync_every: 0,
            ..job
        };
        assert!(!none.command_line(Path::new("/d")).contains("fdatasync"));
    }

    #[test]
    fn reads_bandwidth_and_sync_percentiles() {
        let text = r#"{"jobs": [{"error": 0, "write": {"bw_bytes": 1000, "total_ios": 10},
            "sync": {"total_ios": 0, "lat_ns": {"N": 10, "percentile": {"50.000000": 1,
            "99.000000": 2, "99.900000": 3}}}}]}"#;
        let r = parse_result(text).expect("parses");
        assert_eq!(r.write_bytes_per_s, 1000.0);
        assert_eq!(r.sync_ns, Some([1.0, 2.0, 3.0]));
        let no_sync = r#"{"jobs": [{"write": {"bw_bytes": 5}, "sync": {"lat_ns": {"N": 0}}}]}"#;
        assert_eq!(parse_result(no_sync).expect("parses").sync_ns, None);
        assert!(parse_result(r#"{"jobs": []}"#).is_err());
    }
}
