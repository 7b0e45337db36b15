//! The trie matcher agrees with the naive reference matcher over random patterns (both
//! wildcard syntaxes) and subjects, through random inserts and removes interleaved with
//! cached matches: a stale cache entry or a pruned-too-far node shows up as a
//! difference.

// In tests an unwrap that fails is a test failure with its message: exactly right.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ringbroker::routing::{naive_match, Matcher, Pattern, Syntax};

fn token() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => prop_oneof![Just("a"), Just("b"), Just("c")],
        1 => Just("*"),
        1 => Just(">"),
        1 => Just("#"),
    ]
}

fn pattern(syntax: Syntax) -> impl Strategy<Value = Pattern> {
    prop::collection::vec(token(), 1..6).prop_filter_map("valid pattern", move |tokens| {
        Pattern::parse(&tokens.join("."), syntax).ok()
    })
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..7)
        .prop_map(|t| t.join("."))
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Pattern),
    /// Remove the live entry at this index (modulo the live count).
    Remove(usize),
    Match(String),
}

fn ops(syntax: Syntax) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => pattern(syntax).prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Remove),
            4 => subject().prop_map(Op::Match),
        ],
        1..80,
    )
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut matcher = Matcher::new();
    let mut live: Vec<(Pattern, u32)> = Vec::new();
    let mut next = 0u32;
    for op in ops {
        match op {
            Op::Insert(p) => {
                matcher.insert(&p, next);
                live.push((p, next));
                next += 1;
            }
            Op::Remove(i) if !live.is_empty() => {
                let (p, v) = live.swap_remove(i % live.len());
                prop_assert!(matcher.remove(&p, &v));
                prop_assert!(!matcher.remove(&p, &v));
            }
            Op::Remove(_) => {}
            Op::Match(s) => {
                let mut want: Vec<u32> = live
                    .iter()
                    .filter(|(p, _)| naive_match(p, &s))
                    .map(|(_, v)| *v)
                    .collect();
                want.sort_unstable();
                for _ in 0..2 {
                    let mut got = matcher.matches(&s).to_vec();
                    got.sort_unstable();
                    prop_assert_eq!(&got, &want, "subject {}", s);
                }
            }
        }
        prop_assert_eq!(matcher.len(), live.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn subjects_syntax_matches_the_reference(ops in ops(Syntax::Subjects)) {
        run(ops)?;
    }

    #[test]
    fn topic_syntax_matches_the_reference(ops in ops(Syntax::Topic)) {
        run(ops)?;
    }
}

#[test]
fn many_hashes_over_a_long_subject_stay_fast() {
    // `#.a.#.a.#...` against `a.a.a...`: without folding and deduplication this is
    // exponential; with them it finishes at once with one result.
    let text = ["#", "a"].repeat(10).join(".") + ".#";
    let p = Pattern::parse(&text, Syntax::Topic).unwrap();
    let mut m = Matcher::new();
    m.insert(&p, 1u8);
    let subject = vec!["a"; 30].join(".");
    assert_eq!(m.matches(&subject).to_vec(), vec![1]);
}
