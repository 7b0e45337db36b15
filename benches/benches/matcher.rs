//! The subject matcher: ns per match with 1k and 100k subscriptions (10 % with `*`,
//! 10 % with `>`), uncached and cached, against the naive reference (every pattern
//! tried in turn) in the same run.
//!
//! `cargo bench -p ringbroker-benches --bench matcher`

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringbroker::routing::{naive_match, Matcher, Pattern, Syntax};
// Deterministic, so every run matches the same subjects against the same patterns.
use ringbroker::storage::sim::SeededRng as Rng;

/// `n` patterns shaped like `svc12.eu3.order.created`: 80 % literal, 10 % with a `*`
/// in one position, 10 % ending in `>`.
fn patterns(n: usize, rng: &mut Rng) -> Vec<Pattern> {
    (0..n)
        .map(|_| {
            let mut tokens = vec![
                format!("svc{}", rng.below(n as u64 / 10 + 1)),
                format!("r{}", rng.below(8)),
                format!("e{}", rng.below(20)),
            ];
            match rng.below(10) {
                0 => tokens[rng.below(3) as usize] = "*".into(),
                1 => {
                    tokens.truncate(1 + rng.below(2) as usize);
                    tokens.push(">".into());
                }
                _ => {}
            }
            Pattern::parse(&tokens.join("."), Syntax::Subjects).expect("valid pattern")
        })
        .collect()
}

fn subjects(n: usize, count: usize, rng: &mut Rng) -> Vec<String> {
    (0..count)
        .map(|_| {
            format!(
                "svc{}.r{}.e{}",
                rng.below(n as u64 / 10 + 1),
                rng.below(8),
                rng.below(20)
            )
        })
        .collect()
}

fn matcher(c: &mut Criterion) {
    let mut g = c.benchmark_group("subject_match");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(20);
    for n in [1_000usize, 100_000] {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        let pats = patterns(n, &mut rng);
        let subs = subjects(n, 4096, &mut rng);
        let mut m = Matcher::new();
        for (i, p) in pats.iter().enumerate() {
            m.insert(p, i as u32);
        }
        let mut i = 0;
        g.bench_function(BenchmarkId::new("trie_uncached", n), |b| {
            b.iter(|| {
                i = (i + 1) % subs.len();
                black_box(m.matches_uncached(&subs[i]).len())
            })
        });
        g.bench_function(BenchmarkId::new("trie_cached", n), |b| {
            b.iter(|| {
                i = (i + 1) % 64;
                black_box(m.matches(&subs[i]).len())
            })
        });
        g.bench_function(BenchmarkId::new("naive", n), |b| {
            b.iter(|| {
                i = (i + 1) % subs.len();
                black_box(pats.iter().filter(|p| naive_match(p, &subs[i])).count())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matcher);
criterion_main!(benches);
