//! Cutting client commands out of a connection's input: pipelined (call again for the
//! next command), resumable (an incomplete command is left in place for the next
//! read), zero-copy (every field is a `Bytes` slice of the input).
//!
//! Owns: the grammar of client commands, as nats-server's parser accepts them: verbs in
//! any case, arguments separated by spaces or tabs, control lines ending in `\r\n` (a
//! bare `\n` is accepted too), a payload of exactly the announced size followed by
//! `\r\n`. Never: allocates before a length was checked against its maximum, or looks
//! further than `CONTROL_LINE_MAX` bytes for the end of a control line.

use bytes::{Buf, Bytes, BytesMut};

use super::{NatsError, ARGS_MAX, CONTROL_LINE_MAX};

/// One client command; every field shares the input's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CONNECT {json}`: the JSON text (see `ConnectOptions::decode`).
    Connect(Bytes),
    /// `PUB <subject> [reply] <size>` + payload.
    Pub {
        /// The subject (not yet validated).
        subject: Bytes,
        /// The reply subject, if any.
        reply: Option<Bytes>,
        /// The payload.
        payload: Bytes,
    },
    /// `HPUB <subject> [reply] <header size> <total size>` + headers + payload.
    HPub {
        /// The subject (not yet validated).
        subject: Bytes,
        /// The reply subject, if any.
        reply: Option<Bytes>,
        /// The header block, `NATS/1.0...\r\n\r\n` (see `decode_headers`).
        headers: Bytes,
        /// The payload after the header block.
        payload: Bytes,
    },
    /// `SUB <subject> [queue group] <sid>`.
    Sub {
        /// The subject pattern (not yet validated).
        subject: Bytes,
        /// The queue group, if any.
        queue: Option<Bytes>,
        /// The client's id for the subscription.
        sid: Bytes,
    },
    /// `UNSUB <sid> [max messages]`.
    Unsub {
        /// The client's id for the subscription.
        sid: Bytes,
        /// Unsubscribe once this many messages were delivered in all.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO ...` from a client: accepted and ignored, as nats-server does.
    Info,
}

/// Where an argument lies in its control line.
type Span = (usize, usize);

/// A control line found at the head of the input.
struct Line {
    /// Bytes up to and including the `\n`.
    total: usize,
    /// The verb's span.
    verb: Span,
    /// The arguments' spans.
    args: [Span; ARGS_MAX],
    argc: usize,
    /// Where the text after the verb starts and the line's content ends (`CONNECT`'s
    /// JSON may contain spaces).
    rest: Span,
}

impl Line {
    fn arg(&self, i: usize) -> Span {
        self.args[i]
    }
}

/// Cuts the next whole command off `input`. `Ok(None)`: the command is incomplete;
/// `input` is left as it was (call again when more bytes arrived). An error leaves
/// `input` in an unspecified state: the connection is to be closed.
pub fn parse_command(input: &mut BytesMut, max_payload: u32) -> Result<Option<Command>, NatsError> {
    let Some(line) = find_line(input)? else {
        return Ok(None);
    };
    let verb = &input[line.verb.0..line.verb.1];
    let verb = Verb::of(verb).ok_or(NatsError::UnknownOperation("unknown verb"))?;
    match verb {
        Verb::Pub | Verb::HPub => cut_publish(input, &line, verb == Verb::HPub, max_payload),
        Verb::Connect => {
            let mut cut = Cut::new(input);
            let json = cut.take(line.rest);
            cut.finish(line.total);
            Ok(Some(Command::Connect(json)))
        }
        Verb::Sub => {
            let (subject, queue, sid) = match line.argc {
                2 => (line.arg(0), None, line.arg(1)),
                3 => (line.arg(0), Some(line.arg(1)), line.arg(2)),
                _ => return Err(NatsError::UnknownOperation("SUB takes 2 or 3 arguments")),
            };
            let mut cut = Cut::new(input);
            let command = Command::Sub {
                subject: cut.take(subject),
                queue: queue.map(|q| cut.take(q)),
                sid: cut.take(sid),
            };
            cut.finish(line.total);
            Ok(Some(command))
        }
        Verb::Unsub => {
            let max = match line.argc {
                1 => None,
                2 => Some(parse_size(&input[line.arg(1).0..line.arg(1).1])?),
                _ => return Err(NatsError::UnknownOperation("UNSUB takes 1 or 2 arguments")),
            };
            let mut cut = Cut::new(input);
            let sid = cut.take(line.arg(0));
            cut.finish(line.total);
            Ok(Some(Command::Unsub { sid, max }))
        }
        Verb::Ping | Verb::Pong | Verb::Info => {
            if verb != Verb::Info && line.argc != 0 {
                return Err(NatsError::UnknownOperation(
                    "PING and PONG take no argument",
                ));
            }
            input.advance(line.total);
            Ok(Some(match verb {
                Verb::Ping => Command::Ping,
                Verb::Pong => Command::Pong,
                _ => Command::Info,
            }))
        }
    }
}

/// Takes fields off the head of the input in order, each a `Bytes` of its own, and
/// skips what lies between them without touching a reference count: a field costs
/// one `split_to`, where a frame cut off first and then sliced cost two more atomic
/// operations per command (`perf`, `nats bench pub`).
struct Cut<'a> {
    input: &'a mut BytesMut,
    /// How far into the command the input's head now is.
    at: usize,
}

impl<'a> Cut<'a> {
    fn new(input: &'a mut BytesMut) -> Self {
        Self { input, at: 0 }
    }

    /// The field at `start..end` of the command; fields are taken in order.
    fn take(&mut self, (start, end): Span) -> Bytes {
        debug_assert!(self.at <= start && start <= end);
        self.input.advance(start - self.at);
        self.at = end;
        self.input.split_to(end - start).freeze()
    }

    /// Drops the rest of the command, which is `total` bytes long.
    fn finish(self, total: usize) {
        debug_assert!(self.at <= total);
        self.input.advance(total - self.at);
    }
}

/// `PUB`/`HPUB`: the control line, then the payload and its `\r\n`, all present.
fn cut_publish(
    input: &mut BytesMut,
    line: &Line,
    with_headers: bool,
    max_payload: u32,
) -> Result<Option<Command>, NatsError> {
    let sizes = usize::from(with_headers) + 1;
    let (subject, reply) = match line.argc.checked_sub(sizes) {
        Some(1) => (line.arg(0), None),
        Some(2) => (line.arg(0), Some(line.arg(1))),
        _ => {
            return Err(NatsError::UnknownOperation(
                "wrong argument count for PUB/HPUB",
            ))
        }
    };
    let total_span = line.arg(line.argc - 1);
    let total = parse_size(&input[total_span.0..total_span.1])?;
    if total > u64::from(max_payload) {
        return Err(NatsError::MaxPayload {
            size: total,
            max: max_payload,
        });
    }
    // Checked against max_payload (a u32) just above: fits in usize.
    let total = total as usize;
    let header_len = if with_headers {
        let span = line.arg(line.argc - 2);
        let len = parse_size(&input[span.0..span.1])?;
        if len > total as u64 {
            return Err(NatsError::BadHeaders("header size larger than total size"));
        }
        len as usize
    } else {
        0
    };
    let need = line.total + total + 2;
    if input.len() < need {
        return Ok(None);
    }
    if &input[line.total + total..need] != b"\r\n" {
        return Err(NatsError::UnknownOperation("payload not followed by CRLF"));
    }
    let mut cut = Cut::new(input);
    let subject = cut.take(subject);
    let reply = reply.map(|r| cut.take(r));
    let body = line.total;
    let command = if with_headers {
        Command::HPub {
            subject,
            reply,
            headers: cut.take((body, body + header_len)),
            payload: cut.take((body + header_len, body + total)),
        }
    } else {
        Command::Pub {
            subject,
            reply,
            payload: cut.take((body, body + total)),
        }
    };
    cut.finish(need);
    Ok(Some(command))
}

/// Finds the control line at the head of `input` and splits it into verb and
/// arguments, without taking anything.
fn find_line(input: &[u8]) -> Result<Option<Line>, NatsError> {
    // The content may be CONTROL_LINE_MAX bytes; its `\r\n` comes after.
    let window = &input[..input.len().min(CONTROL_LINE_MAX + 2)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if input.len() >= CONTROL_LINE_MAX + 2 {
            return Err(NatsError::ControlLine {
                max: CONTROL_LINE_MAX,
            });
        }
        return Ok(None);
    };
    let end = if newline > 0 && input[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    if end > CONTROL_LINE_MAX {
        return Err(NatsError::ControlLine {
            max: CONTROL_LINE_MAX,
        });
    }
    let content = &input[..end];
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let verb_end = content.iter().position(is_space).unwrap_or(end);
    if verb_end == 0 {
        return Err(NatsError::UnknownOperation("empty verb"));
    }
    let rest_start = content[verb_end..]
        .iter()
        .position(|b| !is_space(b))
        .map_or(end, |at| verb_end + at);
    let mut line = Line {
        total: newline + 1,
        verb: (0, verb_end),
        args: [(0, 0); ARGS_MAX],
        argc: 0,
        rest: (rest_start, end),
    };
    let mut at = rest_start;
    while at < end {
        let len = content[at..].iter().position(is_space).unwrap_or(end - at);
        if line.argc == ARGS_MAX {
            // Only CONNECT (whose JSON is `rest`) may have more; checked by verb.
            line.argc = ARGS_MAX + 1;
            break;
        }
        line.args[line.argc] = (at, at + len);
        line.argc += 1;
        at += len;
        at += content[at..].iter().take_while(|b| is_space(b)).count();
    }
    if line.argc > ARGS_MAX && !Verb::of(&content[..verb_end]).is_some_and(Verb::free_form) {
        return Err(NatsError::UnknownOperation("too many arguments"));
    }
    line.argc = line.argc.min(ARGS_MAX);
    Ok(Some(line))
}

/// A size argument: decimal digits only, at most 19 of them (no overflow).
fn parse_size(digits: &[u8]) -> Result<u64, NatsError> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NatsError::UnknownOperation("bad size"));
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Connect,
    Pub,
    HPub,
    Sub,
    Unsub,
    Ping,
    Pong,
    Info,
}

impl Verb {
    fn of(text: &[u8]) -> Option<Self> {
        const VERBS: [(&[u8], Verb); 8] = [
            (b"PUB", Verb::Pub),
            (b"HPUB", Verb::HPub),
            (b"SUB", Verb::Sub),
            (b"UNSUB", Verb::Unsub),
            (b"PING", Verb::Ping),
            (b"PONG", Verb::Pong),
            (b"CONNECT", Verb::Connect),
            (b"INFO", Verb::Info),
        ];
        VERBS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, verb)| *verb)
    }

    /// Verbs whose argument is free text (JSON), not space-separated tokens.
    fn free_form(self) -> bool {
        matches!(self, Self::Connect | Self::Info)
    }
}

#[cfg(test)]
mod tests;
