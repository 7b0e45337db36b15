//! The subject matcher: a trie over pattern tokens, shared by subjects (`*`, `>`),
//! stream subject filters, and topic exchanges (`*`, `#`), with a cache of recent
//! results.
//!
//! Owns: the patterns of one shard's replica of interest, and their values (a
//! subscription id, a binding). Never: is shared between threads (each shard keeps its
//! own replica, updated by message), or returns a cached result older than the last
//! insert or remove (any change empties the cache).
//!
//! Matching walks the trie once per subject: at each node, the literal child for the
//! next token, the `*` child, the values under `>` (if at least one token is left) and
//! the `#` child at every remaining position. Cost grows with the subject's length and
//! the wildcards on its path, not with the number of patterns.

use std::collections::HashSet;
use std::sync::Arc;

use super::subject::{Pattern, Token};
use crate::hash::FastMap;

/// The most subjects whose results the cache keeps; past it, the cache is emptied.
pub const MATCH_CACHE_MAX: usize = 4096;

#[derive(Debug, Clone)]
struct Node<T> {
    literals: FastMap<Box<str>, Node<T>>,
    one: Option<Box<Node<T>>>,
    zero_or_more: Option<Box<Node<T>>>,
    /// Entries (id, value) of patterns ending here with `>`.
    one_or_more: Vec<(u64, T)>,
    /// Entries (id, value) of patterns ending exactly here.
    here: Vec<(u64, T)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literals: FastMap::default(),
            one: None,
            zero_or_more: None,
            one_or_more: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.one.is_none()
            && self.zero_or_more.is_none()
            && self.one_or_more.is_empty()
            && self.here.is_empty()
    }
}

/// Patterns with values, matched against subjects.
#[derive(Debug, Clone)]
pub struct Matcher<T> {
    root: Node<T>,
    patterns: usize,
    /// Each insert gets an id, so a pattern that matches a subject along several paths
    /// (`#.*.#`) still yields its value once.
    next_entry: u64,
    cache: FastMap<Box<str>, Arc<[T]>>,
    cache_hits: u64,
    cache_misses: u64,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            patterns: 0,
            next_entry: 0,
            cache: FastMap::default(),
            cache_hits: 0,
            cache_misses: 0,
        }
    }
}

impl<T: Clone + PartialEq> Matcher<T> {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under `pattern`. The same value may be added under several
    /// patterns (it is then returned once per matching pattern) or twice under one.
    pub fn insert(&mut self, pattern: &Pattern, value: T) {
        self.cache.clear();
        let entry = (self.next_entry, value);
        self.next_entry += 1;
        let mut node = &mut self.root;
        for token in pattern.tokens() {
            node = match token {
                Token::Literal(t) => node.literals.entry(t.clone()).or_default(),
                Token::One => node.one.get_or_insert_with(Box::default),
                Token::ZeroOrMore => node.zero_or_more.get_or_insert_with(Box::default),
                Token::OneOrMore => {
                    node.one_or_more.push(entry);
                    self.patterns += 1;
                    return;
                }
            };
        }
        node.here.push(entry);
        self.patterns += 1;
    }

    /// Removes one `value` added under `pattern`; returns whether there was one.
    /// Empty trie nodes are freed.
    pub fn remove(&mut self, pattern: &Pattern, value: &T) -> bool {
        let removed = remove_in(&mut self.root, pattern.tokens(), value);
        if removed {
            self.cache.clear();
            self.patterns -= 1;
        }
        removed
    }

    /// How many (pattern, value) entries the matcher holds.
    pub fn len(&self) -> usize {
        self.patterns
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }

    /// The values of every pattern `subject` matches (a value once per matching
    /// pattern), from the cache when this subject was matched since the last change.
    /// `subject` must be valid (`validate_subject`); its tokens are split on `.`.
    pub fn matches(&mut self, subject: &str) -> Arc<[T]> {
        if let Some(hit) = self.cache.get(subject) {
            self.cache_hits += 1;
            return hit.clone();
        }
        self.cache_misses += 1;
        let result: Arc<[T]> = self.matches_uncached(subject).into();
        if self.cache.len() >= MATCH_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(subject.into(), result.clone());
        result
    }

    /// The values of every pattern `subject` matches, without the cache.
    pub fn matches_uncached(&self, subject: &str) -> Vec<T> {
        let mut tokens: [&str; super::subject::SUBJECT_TOKENS_MAX] =
            [""; super::subject::SUBJECT_TOKENS_MAX];
        let mut n = 0;
        for token in subject.split('.') {
            if n == tokens.len() {
                return Vec::new();
            }
            tokens[n] = token;
            n += 1;
        }
        let mut out = Vec::new();
        let mut walk = Walk {
            out: &mut out,
            seen: None,
        };
        collect(&self.root, &tokens[..n], &mut walk);
        if walk.seen.is_some() {
            out.sort_unstable_by_key(|&(id, _)| id);
            out.dedup_by_key(|&mut (id, _)| id);
        }
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache_hits, self.cache_misses)
    }
}

/// A walk's output and its memory of `#` branches.
struct Walk<'o, T> {
    out: &'o mut Vec<(u64, T)>,
    /// (node, tokens left) pairs already walked, once a `#` made paths overlap: a
    /// second visit could only find the same entries again. This bounds the walk by
    /// nodes × positions however many `#` a pattern has.
    seen: Option<HashSet<(usize, usize)>>,
}

/// Adds the entries of `node`'s patterns that match `rest` to `walk.out`.
fn collect<T: Clone>(node: &Node<T>, rest: &[&str], walk: &mut Walk<'_, T>) {
    if let Some(seen) = &mut walk.seen {
        if !seen.insert((node as *const Node<T> as usize, rest.len())) {
            return;
        }
    }
    if let Some(any) = &node.zero_or_more {
        walk.seen.get_or_insert_with(HashSet::new);
        // `#` takes zero tokens, or one, or ... all of them.
        for skip in 0..=rest.len() {
            collect(any, &rest[skip..], walk);
        }
    }
    let Some((first, tail)) = rest.split_first() else {
        walk.out.extend(node.here.iter().cloned());
        return;
    };
    walk.out.extend(node.one_or_more.iter().cloned());
    if let Some(child) = node.literals.get(*first) {
        collect(child, tail, walk);
    }
    if let Some(one) = &node.one {
        collect(one, tail, walk);
    }
}

fn remove_in<T: PartialEq>(node: &mut Node<T>, tokens: &[Token], value: &T) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return remove_one(&mut node.here, value);
    };
    let (removed, child_empty) = match first {
        Token::OneOrMore => return remove_one(&mut node.one_or_more, value),
        Token::Literal(t) => match node.literals.get_mut(t) {
            Some(child) => (remove_in(child, rest, value), child.is_empty()),
            None => return false,
        },
        Token::One => match node.one.as_deref_mut() {
            Some(child) => (remove_in(child, rest, value), child.is_empty()),
            None => return false,
        },
        Token::ZeroOrMore => match node.zero_or_more.as_deref_mut() {
            Some(child) => (remove_in(child, rest, value), child.is_empty()),
            None => return false,
        },
    };
    if child_empty {
        match first {
            Token::Literal(t) => {
                node.literals.remove(t);
            }
            Token::One => node.one = None,
            Token::ZeroOrMore => node.zero_or_more = None,
            Token::OneOrMore => {}
        }
    }
    removed
}

fn remove_one<T: PartialEq>(values: &mut Vec<(u64, T)>, value: &T) -> bool {
    match values.iter().position(|(_, v)| v == value) {
        Some(i) => {
            values.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The reference matcher: whether `pattern` matches `subject`, by plain recursion over
/// tokens. Slow and obviously right; tests and benchmarks compare the trie with it.
pub fn naive_match(pattern: &Pattern, subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    naive(pattern.tokens(), &tokens)
}

fn naive(pattern: &[Token], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((Token::ZeroOrMore, rest)), _) => {
            (0..=subject.len()).any(|i| naive(rest, &subject[i..]))
        }
        (Some((Token::OneOrMore, _)), Some(_)) => true,
        (Some((Token::One, rest)), Some((_, tail))) => naive(rest, tail),
        (Some((Token::Literal(t), rest)), Some((s, tail))) => **t == **s && naive(rest, tail),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::subject::Syntax;

    fn p(text: &str, syntax: Syntax) -> Pattern {
        Pattern::parse(text, syntax).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn subject_wildcards_match_as_documented() {
        let mut m = Matcher::new();
        m.insert(&p("user.>", Syntax::Subjects), 1);
        m.insert(&p("orders.*.shipped", Syntax::Subjects), 2);
        m.insert(&p("orders.>", Syntax::Subjects), 3);
        m.insert(&p("*", Syntax::Subjects), 4);
        assert_eq!(sorted(m.matches("user.registered").to_vec()), vec![1]);
        assert_eq!(sorted(m.matches("user.updated.email").to_vec()), vec![1]);
        assert_eq!(
            sorted(m.matches("user").to_vec()),
            vec![4],
            "'>' needs a token"
        );
        assert_eq!(sorted(m.matches("orders.123.shipped").to_vec()), vec![2, 3]);
        assert_eq!(sorted(m.matches("orders.1.2.shipped").to_vec()), vec![3]);
    }

    #[test]
    fn topic_hash_matches_zero_or_more_words_anywhere() {
        let mut m = Matcher::new();
        m.insert(&p("#", Syntax::Topic), 1);
        m.insert(&p("a.#", Syntax::Topic), 2);
        m.insert(&p("#.z", Syntax::Topic), 3);
        m.insert(&p("a.#.z", Syntax::Topic), 4);
        m.insert(&p("a.*.#", Syntax::Topic), 5);
        m.insert(&p("#.*.#", Syntax::Topic), 6);
        assert_eq!(sorted(m.matches("a").to_vec()), vec![1, 2, 6]);
        assert_eq!(sorted(m.matches("a.z").to_vec()), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            sorted(m.matches("a.b.c.z").to_vec()),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(sorted(m.matches("z").to_vec()), vec![1, 3, 6]);
    }

    #[test]
    fn removal_invalidates_the_cache_and_frees_nodes() {
        let mut m = Matcher::new();
        let pat = p("a.*.c", Syntax::Subjects);
        m.insert(&pat, 7);
        m.insert(&pat, 7);
        assert_eq!(m.matches("a.b.c").len(), 2);
        assert_eq!(m.matches("a.b.c").len(), 2);
        assert_eq!(m.cache_stats(), (1, 1));
        assert!(m.remove(&pat, &7));
        assert_eq!(
            m.matches("a.b.c").to_vec(),
            vec![7],
            "a stale cached result"
        );
        assert!(m.remove(&pat, &7));
        assert!(!m.remove(&pat, &7));
        assert!(m.matches("a.b.c").is_empty());
        assert!(m.is_empty());
        assert!(m.root.is_empty(), "empty nodes are freed");
        m.insert(&pat, 8);
        assert_eq!(
            m.matches("a.b.c").to_vec(),
            vec![8],
            "insert invalidates too"
        );
    }
}
