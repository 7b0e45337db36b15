//! Subjects and patterns: dot-separated tokens, validated, in the two wildcard syntaxes
//! the engine speaks.
//!
//! Owns: what a valid subject (a publish address) and a valid pattern (a subscription
//! filter) are, with errors that say exactly what is wrong. Never: allocates for a
//! subject longer than `SUBJECT_BYTES_MAX` (checked first).
//!
//! | syntax | one token | the rest |
//! |---|---|---|
//! | `Syntax::Subjects` (subjects, stream filters; NATS) | `*` | `>`: one or more trailing tokens, last token only |
//! | `Syntax::Topic` (topic exchanges; AMQP) | `*` | `#`: zero or more tokens, anywhere |
//!
//! A wildcard is a whole token: `a*` is a literal token. Tokens are non-empty and hold no
//! whitespace or control characters (a space would split a NATS control line).

/// The longest subject or pattern, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 1024;
/// The most tokens in a subject or pattern.
pub const SUBJECT_TOKENS_MAX: usize = 128;

/// Which wildcards a pattern may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// `*` = one token, `>` = one or more trailing tokens (subjects, stream filters).
    Subjects,
    /// `*` = one token, `#` = zero or more tokens anywhere (topic exchanges).
    Topic,
}

/// Why a subject or pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The empty string.
    #[error("subject is empty")]
    Empty,
    /// Longer than `SUBJECT_BYTES_MAX`.
    #[error("subject is {len} bytes, more than the {max}-byte limit")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than `SUBJECT_TOKENS_MAX` tokens.
    #[error("subject has more than {max} tokens")]
    TooManyTokens {
        /// The limit.
        max: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("subject has an empty token at position {index}")]
    EmptyToken {
        /// The token's position, from 0.
        index: usize,
    },
    /// A space, tab, newline or other control character.
    #[error("subject has whitespace or a control character at byte {at}")]
    Whitespace {
        /// Its byte position.
        at: usize,
    },
    /// A wildcard in a subject that is published to.
    #[error("subject to publish to has a wildcard token at position {index}")]
    WildcardInSubject {
        /// The token's position.
        index: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("subject is not UTF-8")]
    NotUtf8,
    /// `>` anywhere but the last token.
    #[error("'>' must be the last token (found at position {index})")]
    TailNotLast {
        /// The token's position.
        index: usize,
    },
}

/// One token of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token {
    /// Matches exactly this token.
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens; always last.
    OneOrMore,
    /// `#`: zero or more tokens.
    ZeroOrMore,
}

/// A validated pattern, as tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses and validates `text` in `syntax`.
    pub fn parse(text: &str, syntax: Syntax) -> Result<Self, SubjectError> {
        check_shape(text)?;
        let mut tokens: Vec<Token> = text
            .split('.')
            .map(|t| match (t, syntax) {
                ("*", _) => Token::One,
                (">", Syntax::Subjects) => Token::OneOrMore,
                ("#", Syntax::Topic) => Token::ZeroOrMore,
                _ => Token::Literal(t.into()),
            })
            .collect();
        // `#.#` matches what `#` does; folding runs keeps matching polynomial.
        tokens.dedup_by(|a, b| *a == Token::ZeroOrMore && *b == Token::ZeroOrMore);
        if let Some(index) = tokens.iter().position(|t| *t == Token::OneOrMore) {
            if index + 1 != tokens.len() {
                return Err(SubjectError::TailNotLast { index });
            }
        }
        Ok(Self { tokens })
    }

    /// The tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether any token is a wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Literal(_)))
    }
}

/// Checks a subject to publish to: a valid pattern without wildcard tokens (in either
/// syntax: `*`, `>` and `#` are all refused, so a subject means the same everywhere).
pub fn validate_subject(text: &str) -> Result<(), SubjectError> {
    if plainly_valid_subject(text.as_bytes()) {
        return Ok(());
    }
    check_subject(text)
}

/// Every check of `validate_subject`, each naming what is wrong.
fn check_subject(text: &str) -> Result<(), SubjectError> {
    check_shape(text)?;
    match text.split('.').position(|t| matches!(t, "*" | ">" | "#")) {
        Some(index) => Err(SubjectError::WildcardInSubject { index }),
        None => Ok(()),
    }
}

/// The common case in one pass over the bytes: a printable-ASCII subject that passes
/// every check of `validate_subject`. False means "not certainly valid": non-ASCII
/// text (whose whitespace only `char` knows) or an invalid subject, which the full
/// checks then name. Publishes validate every subject, so this is on their hot path.
pub(crate) fn plainly_valid_subject(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > SUBJECT_BYTES_MAX {
        return false;
    }
    let mut tokens = 1;
    let mut start = 0;
    for (at, &b) in bytes.iter().enumerate() {
        // Space, controls, DEL, and everything outside ASCII.
        if b <= b' ' || b >= 0x7f {
            return false;
        }
        if b == b'.' {
            if !plain_token(&bytes[start..at]) {
                return false;
            }
            tokens += 1;
            start = at + 1;
        }
    }
    tokens <= SUBJECT_TOKENS_MAX && plain_token(&bytes[start..])
}

/// A non-empty token that is not a wildcard of either syntax.
fn plain_token(token: &[u8]) -> bool {
    !matches!(token, [] | [b'*'] | [b'>'] | [b'#'])
}

/// Length, token count, empty tokens, whitespace: the checks subjects and patterns
/// share.
fn check_shape(text: &str) -> Result<(), SubjectError> {
    if text.is_empty() {
        return Err(SubjectError::Empty);
    }
    if text.len() > SUBJECT_BYTES_MAX {
        return Err(SubjectError::TooLong {
            len: text.len(),
            max: SUBJECT_BYTES_MAX,
        });
    }
    if let Some(at) = text
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
        .map(|(at, _)| at)
    {
        return Err(SubjectError::Whitespace { at });
    }
    for (index, token) in text.split('.').enumerate() {
        if index >= SUBJECT_TOKENS_MAX {
            return Err(SubjectError::TooManyTokens {
                max: SUBJECT_TOKENS_MAX,
            });
        }
        if token.is_empty() {
            return Err(SubjectError::EmptyToken { index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_validated_with_precise_errors() {
        assert_eq!(validate_subject("orders.eu.42"), Ok(()));
        assert_eq!(
            validate_subject("a*b.c>"),
            Ok(()),
            "wildcards are whole tokens"
        );
        assert_eq!(validate_subject(""), Err(SubjectError::Empty));
        assert_eq!(
            validate_subject("a..b"),
            Err(SubjectError::EmptyToken { index: 1 })
        );
        assert_eq!(
            validate_subject(".a"),
            Err(SubjectError::EmptyToken { index: 0 })
        );
        assert_eq!(
            validate_subject("a."),
            Err(SubjectError::EmptyToken { index: 1 })
        );
        assert_eq!(
            validate_subject("a b"),
            Err(SubjectError::Whitespace { at: 1 })
        );
        assert_eq!(
            validate_subject("a\tb"),
            Err(SubjectError::Whitespace { at: 1 })
        );
        assert_eq!(
            validate_subject("a\u{0}"),
            Err(SubjectError::Whitespace { at: 1 })
        );
        for wild in ["a.*", "a.>", "#.a"] {
            assert!(
                matches!(
                    validate_subject(wild),
                    Err(SubjectError::WildcardInSubject { .. })
                ),
                "{wild}"
            );
        }
        let long = "x".repeat(SUBJECT_BYTES_MAX + 1);
        assert!(matches!(
            validate_subject(&long),
            Err(SubjectError::TooLong { .. })
        ));
        let many = vec!["a"; SUBJECT_TOKENS_MAX + 1].join(".");
        assert!(matches!(
            validate_subject(&many),
            Err(SubjectError::TooManyTokens { .. })
        ));
        assert_eq!(
            validate_subject(&vec!["a"; SUBJECT_TOKENS_MAX].join(".")),
            Ok(())
        );
    }

    proptest::proptest! {
        /// The one-pass check agrees with the full checks: it never passes an invalid
        /// subject, and passes every valid printable-ASCII one.
        #[test]
        fn the_one_pass_check_agrees_with_the_full_checks(
            text in "[a.*>#b \t\x7f\u{e9}\u{a0}\u{0}]{0,12}",
        ) {
            let plain = plainly_valid_subject(text.as_bytes());
            let valid = check_subject(&text).is_ok();
            proptest::prop_assert!(!plain || valid, "{text:?} passed the one-pass check");
            if text.bytes().all(|b| b.is_ascii_graphic()) {
                proptest::prop_assert_eq!(plain, valid, "{:?}", text);
            }
        }
    }

    #[test]
    fn the_one_pass_check_keeps_the_bounds() {
        let longest = "x".repeat(SUBJECT_BYTES_MAX);
        assert!(plainly_valid_subject(longest.as_bytes()));
        assert!(!plainly_valid_subject(format!("{longest}x").as_bytes()));
        let most = vec!["a"; SUBJECT_TOKENS_MAX].join(".");
        assert!(plainly_valid_subject(most.as_bytes()));
        assert!(!plainly_valid_subject(format!("{most}.a").as_bytes()));
    }

    #[test]
    fn patterns_follow_their_syntax() {
        let p = Pattern::parse("a.*.>", Syntax::Subjects).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.tokens(),
            &[Token::Literal("a".into()), Token::One, Token::OneOrMore]
        );
        assert_eq!(
            Pattern::parse("a.>.b", Syntax::Subjects),
            Err(SubjectError::TailNotLast { index: 1 })
        );
        // `#` is literal in subject syntax, `>` literal in topic syntax.
        let p = Pattern::parse("#.a.>", Syntax::Topic).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.tokens()[0], Token::ZeroOrMore);
        assert_eq!(p.tokens()[2], Token::Literal(">".into()));
        let folded = Pattern::parse("#.#.a.#.#", Syntax::Topic).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(folded.tokens().len(), 3);
        assert!(!Pattern::parse("a.b", Syntax::Topic)
            .unwrap_or_else(|e| panic!("{e}"))
            .has_wildcards());
    }
}
