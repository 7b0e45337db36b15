//! The client's writing side: the connection's socket and the frames waiting for it.
//!
//! Owns: the `TcpStream` callers write to, a buffer of encoded frames not yet written,
//! and the flusher thread that writes that buffer. Frames that wait for an answer (and
//! fire-and-forget frames sent after a quiet spell, such as a responder's reply) are
//! written by the caller at once, together with whatever is buffered before them.
//! Fire-and-forget frames sent in a burst (within `BURST` of the previous one) are
//! buffered and written by the flusher, many per `write`, the moment it runs: a loop of
//! single publishes costs one syscall per buffer, not one per message.
//!
//! Never: reorders frames (every write takes the buffer's contents while holding the
//! socket, so writes leave in the order frames were appended), or grows past
//! `FLUSH_BYTES` plus the frames appended concurrently: a caller that finds the buffer
//! full writes it itself, waiting for the socket (that wait is the backpressure).

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{lock, ClientError};
use crate::protocol::{encode_frame, ErrorCode, Op};

/// A fire-and-forget frame sent within this long of the previous one is buffered.
const BURST: Duration = Duration::from_micros(20);
/// A caller that finds this much buffered writes it itself.
const FLUSH_BYTES: usize = 64 << 10;

/// What waits for the socket.
#[derive(Default)]
struct Buffered {
    bytes: BytesMut,
    /// When the last fire-and-forget frame was appended.
    last_fire: Option<Instant>,
    /// The flusher has been asked to write and has not yet taken the buffer.
    kicked: bool,
    /// The client is closing: the flusher ends.
    stop: bool,
}

/// The socket and the frames waiting for it.
pub(super) struct Outbox {
    stream: Mutex<TcpStream>,
    buffered: Mutex<Buffered>,
    wake: Condvar,
    /// `write` calls made (each writes one or more frames).
    writes: AtomicU64,
    /// The current connection's largest frame (from its handshake).
    max_frame: AtomicU32,
}

impl Outbox {
    pub(super) fn new(stream: TcpStream, max_frame: u32) -> Self {
        Self {
            stream: Mutex::new(stream),
            buffered: Mutex::new(Buffered::default()),
            wake: Condvar::new(),
            writes: AtomicU64::new(0),
            max_frame: AtomicU32::new(max_frame),
        }
    }

    /// Writes one frame now, after everything buffered before it. The socket is held
    /// from the append to the write, so a reconnect (`replace_stream`) cannot come in
    /// between and drop the frame while its caller waits for an answer: it goes to the
    /// connection current at the append, or the write fails.
    pub(super) fn send(
        &self,
        op: Op,
        flags: u16,
        correlation: u64,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        let mut stream = lock(&self.stream);
        let bytes = {
            let mut buffered = lock(&self.buffered);
            let max_frame = self.max_frame.load(Ordering::Relaxed);
            append(&mut buffered.bytes, max_frame, op, flags, correlation, body)?;
            buffered.bytes.split()
        };
        self.write_locked(&mut stream, &bytes)
    }

    /// Sends a fire-and-forget frame: buffered for the flusher when it follows another
    /// within `BURST` and the buffer has room, else written now as `send` does.
    pub(super) fn fire(
        &self,
        op: Op,
        flags: u16,
        correlation: u64,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        let now = Instant::now();
        {
            let mut buffered = lock(&self.buffered);
            let max_frame = self.max_frame.load(Ordering::Relaxed);
            append(&mut buffered.bytes, max_frame, op, flags, correlation, body)?;
            let burst = buffered
                .last_fire
                .is_some_and(|last| now.saturating_duration_since(last) < BURST);
            buffered.last_fire = Some(now);
            if burst && buffered.bytes.len() < FLUSH_BYTES {
                if !buffered.kicked {
                    buffered.kicked = true;
                    self.wake.notify_one();
                }
                return Ok(());
            }
        }
        self.write_buffered()
    }

    /// Writes everything buffered now (nothing if the buffer is empty).
    pub(super) fn flush(&self) -> Result<(), ClientError> {
        self.write_buffered()
    }

    /// Takes the buffer while holding the socket, so writes leave in append order.
    fn write_buffered(&self) -> Result<(), ClientError> {
        let mut stream = lock(&self.stream);
        let bytes = lock(&self.buffered).bytes.split();
        self.write_locked(&mut stream, &bytes)
    }

    fn write_locked(&self, stream: &mut TcpStream, bytes: &[u8]) -> Result<(), ClientError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        stream
            .write_all(bytes)
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }

    /// The flusher thread: writes the buffer each time a burst kicks it, until `stop`.
    /// A failed write is left to the reader thread, which sees the connection go.
    pub(super) fn run_flusher(&self) {
        loop {
            {
                let mut buffered = lock(&self.buffered);
                while !buffered.kicked && !buffered.stop {
                    buffered = self
                        .wake
                        .wait(buffered)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if buffered.stop {
                    return;
                }
                buffered.kicked = false;
            }
            let _ = self.write_buffered();
        }
    }

    /// Writes made so far (each carries one or more frames).
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Bytes buffered and not yet written (tests: what a reconnect would drop).
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        lock(&self.buffered).bytes.len()
    }

    /// A new connection replaces the lost one; frames buffered for the old one are
    /// dropped (fire-and-forget: at most once).
    pub(super) fn replace_stream(&self, stream: TcpStream, max_frame: u32) {
        let mut current = lock(&self.stream);
        lock(&self.buffered).bytes.clear();
        self.max_frame.store(max_frame, Ordering::Relaxed);
        *current = stream;
    }

    /// Closing: writes what is buffered (best effort), shuts the socket down and ends
    /// the flusher.
    pub(super) fn close(&self) {
        let _ = self.write_buffered();
        let _ = lock(&self.stream).shutdown(Shutdown::Both);
        lock(&self.buffered).stop = true;
        self.wake.notify_all();
    }
}

/// Encodes one frame at the end of `bytes`, refusing (and removing) one larger than
/// the server takes.
fn append(
    bytes: &mut BytesMut,
    max_frame: u32,
    op: Op,
    flags: u16,
    correlation: u64,
    body: impl FnOnce(&mut BytesMut),
) -> Result<(), ClientError> {
    let start = bytes.len();
    let len = encode_frame(bytes, op, flags, correlation, body);
    if len > max_frame as usize {
        bytes.truncate(start);
        return Err(ClientError::Server {
            code: ErrorCode::FrameTooLarge,
            message: format!("frame of {len} bytes exceeds the server's maximum of {max_frame}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;
    use crate::protocol::{split_frame, FLAG_NO_REPLY};

    /// An outbox over a loopback connection, its flusher running, and the far end.
    fn outbox() -> (Arc<Outbox>, TcpStream, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let near = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (far, _) = listener.accept().expect("accept");
        let outbox = Arc::new(Outbox::new(near, 1 << 20));
        let flusher = {
            let outbox = outbox.clone();
            std::thread::spawn(move || outbox.run_flusher())
        };
        (outbox, far, flusher)
    }

    /// Reads frames until `n` arrived; their correlation ids, in order.
    fn read_frames(far: &mut TcpStream, n: usize) -> Vec<u64> {
        far.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < n {
            while let Some((header, total)) = split_frame(&buf, u32::MAX).expect("frame") {
                let _ = buf.split_to(total);
                got.push(header.correlation);
            }
            if got.len() >= n {
                break;
            }
            let mut chunk = [0u8; 64 << 10];
            let read = far.read(&mut chunk).expect("read");
            assert!(read > 0, "closed after {} frames", got.len());
            buf.extend_from_slice(&chunk[..read]);
        }
        got
    }

    #[test]
    fn a_burst_of_fires_leaves_in_few_writes_and_in_order() {
        let (outbox, mut far, flusher) = outbox();
        let reader = std::thread::spawn(move || read_frames(&mut far, 10_001));
        for i in 0..10_000u64 {
            outbox
                .fire(Op::Publish, FLAG_NO_REPLY, i, |out| {
                    out.extend_from_slice(&[7u8; 32]);
                })
                .expect("fire");
        }
        // A frame that waits for an answer goes out after everything before it.
        outbox.send(Op::Ping, 0, 10_000, |_| {}).expect("send");
        let got = reader.join().expect("reader");
        assert!(
            got == (0..=10_000).collect::<Vec<u64>>(),
            "frames out of order or missing: {} of 10,001",
            got.len()
        );
        let writes = outbox.writes();
        assert!(
            writes < 2_500,
            "{writes} writes for 10,000 frames sent in one burst"
        );
        outbox.close();
        flusher.join().expect("flusher");
    }

    #[test]
    fn a_fire_after_a_quiet_spell_is_written_at_once() {
        let (outbox, mut far, flusher) = outbox();
        for i in 0..3u64 {
            std::thread::sleep(Duration::from_millis(5));
            let before = outbox.writes();
            outbox
                .fire(Op::Publish, FLAG_NO_REPLY, i, |_| {})
                .expect("fire");
            assert_eq!(outbox.writes(), before + 1, "written by the caller");
        }
        assert_eq!(read_frames(&mut far, 3), vec![0, 1, 2]);
        outbox.close();
        flusher.join().expect("flusher");
    }

    #[test]
    fn an_oversized_frame_is_refused_and_leaves_nothing_behind() {
        let (outbox, mut far, flusher) = outbox();
        let refused = outbox.fire(Op::Publish, FLAG_NO_REPLY, 1, |out| {
            out.extend_from_slice(&vec![0u8; 2 << 20]);
        });
        assert!(matches!(
            refused,
            Err(ClientError::Server {
                code: ErrorCode::FrameTooLarge,
                ..
            })
        ));
        outbox
            .send(Op::Ping, 0, 2, |_| {})
            .expect("the next frame goes");
        assert_eq!(read_frames(&mut far, 1), vec![2]);
        outbox.close();
        flusher.join().expect("flusher");
    }

    #[test]
    fn writes_to_a_closed_connection_fail_as_disconnected_and_the_flusher_lives_on() {
        let (outbox, far, flusher) = outbox();
        drop(far);
        // The first writes may still land in the socket's buffer; a later one fails.
        let mut failed = None;
        for i in 0..1_000u64 {
            if let Err(e) = outbox.send(Op::Ping, 0, i, |out| out.extend_from_slice(&[1u8; 1024])) {
                failed = Some(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            matches!(failed, Some(ClientError::Disconnected(_))),
            "sends to a closed connection: {failed:?}"
        );
        // A burst now fails in the flusher, which drops the error (the reader thread
        // reports the lost connection) and keeps running; close still ends it.
        for i in 0..100u64 {
            let _ = outbox.fire(Op::Publish, FLAG_NO_REPLY, i, |_| {});
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !flusher.is_finished(),
            "the flusher ended on a failed write"
        );
        outbox.close();
        flusher.join().expect("flusher");
    }

    #[test]
    fn a_new_connection_drops_what_was_buffered_for_the_old_one() {
        // No flusher: a burst stays buffered until something writes it.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let near = TcpStream::connect(addr).expect("connect");
        let (mut old_far, _) = listener.accept().expect("accept");
        let outbox = Outbox::new(near, 1 << 20);
        for i in 0..100u64 {
            outbox
                .fire(Op::Publish, FLAG_NO_REPLY, i, |_| {})
                .expect("fire");
        }
        let written_before = outbox.writes(); // the first fire, written at once
                                              // Fires more than `BURST` apart (a loaded machine) write what was buffered:
                                              // the frames written are the 100 minus those still buffered (all one size).
        let mut one = BytesMut::new();
        append(&mut one, u32::MAX, Op::Publish, FLAG_NO_REPLY, 0, |_| {}).expect("frame");
        let frames_written = 100 - outbox.buffered_bytes() / one.len();
        let near = TcpStream::connect(addr).expect("connect again");
        let (mut new_far, _) = listener.accept().expect("accept again");
        outbox.replace_stream(near, 1 << 20);
        outbox.send(Op::Ping, 0, 999, |_| {}).expect("send");
        assert_eq!(
            read_frames(&mut new_far, 1),
            vec![999],
            "only the frame sent after"
        );
        assert_eq!(outbox.writes(), written_before + 1);
        // The old connection got the frames written before, then its end.
        let mut rest = Vec::new();
        old_far
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        old_far.read_to_end(&mut rest).expect("read to the end");
        let mut frames = 0;
        let mut buf = BytesMut::from(&rest[..]);
        while let Some((_, total)) = split_frame(&buf, u32::MAX).expect("frame") {
            let _ = buf.split_to(total);
            frames += 1;
        }
        assert_eq!(frames, frames_written, "frames the old connection got");
        outbox.close();
    }

    #[test]
    fn close_writes_what_is_buffered() {
        // No flusher: what the burst buffered leaves only because `close` writes it.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let near = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut far, _) = listener.accept().expect("accept");
        let outbox = Outbox::new(near, 1 << 20);
        for i in 0..500u64 {
            outbox
                .fire(Op::Publish, FLAG_NO_REPLY, i, |_| {})
                .expect("fire");
        }
        assert!(outbox.writes() < 500, "the burst was buffered");
        outbox.close();
        assert_eq!(read_frames(&mut far, 500), (0..500).collect::<Vec<u64>>());
    }
}
