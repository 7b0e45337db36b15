//! Power cuts against the partition log, on the simulated directory that forgets every
//! byte no completed `fdatasync` covered (and may keep a torn prefix, garbage or zeros
//! instead). For each seed: random appends under `Always` or `Batch`, with 1 to 3 groups
//! in flight whose writes and syncs are carried out step by step in random order (a
//! later group's write and sync may finish before an earlier group's write starts), so
//! a cut can fall between any two; random write/sync failures, then a cut at a random
//! moment and a reopen. Checks: every
//! acknowledged record is present and byte-identical, no record of an append reported
//! as failed is (they are cut before the failure is reported), offsets are contiguous
//! from 0, nothing is duplicated, and the log takes appends again.
//!
//! Seeds: `RINGBROKER_POWER_CUT_SEEDS` (default 1000), first seed
//! `RINGBROKER_POWER_CUT_SEED` (default 0): a failure prints its seed to replay it.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringbroker::storage::codec::{decode_batch, with_records, RecordBuf};
use ringbroker::storage::sim::{random_synced_durability, FaultPlan, SeededRng as Rng, SimDir};
use ringbroker::storage::{AppendOutcome, AppendTicket, IoRequest, LogConfig, PartitionLog};

/// A record as the test remembers it.
type Owned = RecordBuf;

fn random_batch(rng: &mut Rng) -> Vec<Owned> {
    (0..1 + rng.below(5))
        .map(|_| Owned {
            timestamp: 1_700_000_000_000 + rng.below(1_000_000) as i64,
            key: if rng.below(3) == 0 {
                None
            } else {
                Some(rng.bytes(16))
            },
            headers: (0..rng.below(3))
                .map(|_| (rng.bytes(8), rng.bytes(8)))
                .collect(),
            value: rng.bytes(300),
        })
        .collect()
}

fn append(log: &mut PartitionLog<SimDir>, batch: &[Owned], now: Instant) -> Option<AppendTicket> {
    with_records(batch, |records| log.append(records, now).ok())
}

/// Every record in the log, in offset order, checked by the codec on the way.
fn read_all(log: &PartitionLog<SimDir>) -> Vec<(u64, Owned)> {
    let mut out = Vec::new();
    let mut offset = log.first_offset();
    while offset < log.stored_end() {
        let bytes = log.read(offset, 64 << 10).unwrap();
        assert!(
            !bytes.is_empty(),
            "read returned nothing below the stored end"
        );
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let batch = decode_batch(rest).unwrap();
            for r in batch.records() {
                if r.offset >= offset {
                    out.push((r.offset, RecordBuf::from_view(&r)));
                    offset = r.offset + 1;
                }
            }
            rest = &rest[batch.bytes().len()..];
        }
    }
    out
}

struct Run {
    log: PartitionLog<SimDir>,
    rng: Rng,
    now: Instant,
    /// Appends waiting for their outcome.
    waiting: HashMap<AppendTicket, Vec<Owned>>,
    /// Acknowledged records by offset.
    acked: HashMap<u64, Owned>,
    /// Records of appends reported as failed: never to be served.
    failed: Vec<Owned>,
    /// Requests taken from the log and not yet carried out (or half carried out: the
    /// flag says the write is done).
    inflight: Vec<(IoRequest, bool)>,
}

impl Run {
    fn drain_outcomes(&mut self) {
        while let Some(outcome) = self.log.take_outcome() {
            match outcome {
                AppendOutcome::Stored {
                    ticket,
                    base_offset,
                    last_offset,
                } => {
                    let batch = self.waiting.remove(&ticket).unwrap();
                    assert_eq!(batch.len() as u64, last_offset - base_offset + 1);
                    for (i, r) in batch.into_iter().enumerate() {
                        assert!(
                            self.acked.insert(base_offset + i as u64, r).is_none(),
                            "offset acked twice"
                        );
                    }
                }
                AppendOutcome::Failed { ticket, .. } => {
                    let batch = self.waiting.remove(&ticket).unwrap();
                    self.failed.extend(batch);
                }
            }
        }
    }

    /// One random step. Returns false when the power is cut.
    fn step(&mut self) -> bool {
        match self.rng.below(10) {
            0..=3 => {
                let batch = random_batch(&mut self.rng);
                if let Some(t) = append(&mut self.log, &batch, self.now) {
                    self.waiting.insert(t, batch);
                }
            }
            4 => self.now += Duration::from_millis(self.rng.below(5)),
            5..=8 => self.advance_io(),
            _ => return self.rng.below(25) != 0,
        }
        self.drain_outcomes();
        true
    }

    /// Takes a request, or does the write or the sync of a random one in flight: one
    /// at a time, so a power cut can fall between any two.
    fn advance_io(&mut self) {
        use ringbroker::storage::StorageDir;
        let pick = self.rng.below(self.inflight.len() as u64 + 1) as usize;
        if pick == self.inflight.len() {
            if let Some(req) = self.log.next_request(self.now) {
                self.inflight.push((req, false));
            }
            return;
        }
        match self.inflight.swap_remove(pick) {
            (req, false) => {
                let result = self
                    .log
                    .dir_mut()
                    .write_at(req.file, req.position, &req.data);
                match result {
                    Ok(()) if req.sync => self.inflight.push((req, true)),
                    other => self.log.complete(req.id, other),
                }
            }
            (req, true) => {
                let result = self.log.dir_mut().sync_data(req.file);
                self.log.complete(req.id, result);
            }
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let durability = random_synced_durability(&mut rng);
    let config = LogConfig {
        durability,
        segment_bytes_max: 1024 + rng.below(4096),
        groups_in_flight_max: 1 + rng.below(3) as usize,
        ..LogConfig::default()
    };
    let mut dir = SimDir::new(seed);
    dir.set_faults(FaultPlan::random(&mut rng, 20));
    let mut acked_before: HashMap<u64, Owned> = HashMap::new();
    let mut failed: Vec<Owned> = Vec::new();
    for _round in 0..3 {
        let (log, _report) = PartitionLog::open(dir, config.clone()).unwrap();
        let mut run = Run {
            log,
            rng: Rng::new(rng.next_u64() | 1),
            now: Instant::now(),
            waiting: HashMap::new(),
            acked: acked_before.clone(),
            failed,
            inflight: Vec::new(),
        };
        check_recovered(&run.log, &acked_before, &run.failed);
        for _ in 0..400 {
            if !run.step() {
                break;
            }
        }
        acked_before = run.acked;
        failed = run.failed;
        dir = run.log.into_dir();
        dir.power_cut();
    }
    let (log, _) = PartitionLog::open(dir, config).unwrap();
    check_recovered(&log, &acked_before, &failed);
}

fn check_recovered(log: &PartitionLog<SimDir>, acked: &HashMap<u64, Owned>, failed: &[Owned]) {
    let records = read_all(log);
    for (i, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, i as u64, "offsets not contiguous from 0");
    }
    let present: HashMap<u64, &Owned> = records.iter().map(|(o, r)| (*o, r)).collect();
    for (offset, want) in acked {
        let got = present
            .get(offset)
            .unwrap_or_else(|| panic!("acknowledged offset {offset} lost"));
        assert_eq!(*got, want, "acknowledged offset {offset} changed");
    }
    // A failed append was cut before it was reported: no power cut brings it back.
    for (offset, record) in &records {
        if !acked.contains_key(offset) {
            assert!(
                !failed.contains(record),
                "offset {offset} holds a record whose append was reported failed"
            );
        }
    }
}

#[test]
fn acknowledged_records_survive_power_cuts() {
    let first: u64 = std::env::var("RINGBROKER_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seeds: u64 = std::env::var("RINGBROKER_POWER_CUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    for seed in first..first + seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed));
        if outcome.is_err() {
            panic!("power-cut check failed; replay with RINGBROKER_POWER_CUT_SEED={seed} RINGBROKER_POWER_CUT_SEEDS=1");
        }
    }
}
