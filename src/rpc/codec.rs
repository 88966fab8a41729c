//! Framing for MessagePack-RPC over a byte stream.
//!
//! MessagePack-RPC has no length prefix: messages are concatenated MessagePack values. This module
//! finds where one value ends without decoding it, so that
//! - a partial read is resumed where it stopped (scanning is linear in the frame size, never
//!   quadratic, however the bytes are split across reads);
//! - many messages in one read are split apart;
//! - a frame that breaks one of its [`Limits`] is rejected as soon as the header that breaks it
//!   is seen, before its body is buffered and long before anything is decoded: more than
//!   [`MAX_FRAME`] bytes, nesting deeper than [`MAX_DEPTH`], more than [`MAX_ELEMENTS`] array and
//!   map elements, or a decoded form estimated above [`MAX_DECODED`] bytes. A frame the scanner
//!   accepted therefore decodes into a bounded amount of memory, in bounded time.
//!
//! Invariants: [`FrameReader::next_frame`] never buffers more than `limits.frame` bytes plus one
//! read; a frame is read at most [`READ_SLICE`] bytes at a time, and once more than
//! [`YIELD_PAST`] bytes of it are buffered the reader lets other tasks run after every read (a
//! huge frame on one connection never holds the daemon's thread for long); bytes of a frame handed out are not left behind in the reader's buffer (they are moved
//! out with the frame or zeroed), so a secret sent in a request lives only as long as its frame.

use bytes::{BufMut, Bytes};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Largest frame the daemon accepts (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays/maps the daemon accepts, counting the message's own array (so a
/// request's params array is level 2 and the map inside it level 3).
pub const MAX_DEPTH: usize = 64;
/// Most array and map elements one frame may declare, all containers together (a map entry
/// counts twice: key and value).
pub const MAX_ELEMENTS: u64 = 1_000_000;
/// Largest decoded form of one frame, as the scanner estimates it: every value costs the size of
/// an [`rmpv::Value`], every string, binary and extension its payload plus an allocation.
pub const MAX_DECODED: u64 = 32 * 1024 * 1024;
/// How far [`FrameReader::closed`] reads ahead of the frames taken.
pub const READ_AHEAD: usize = 64 * 1024;
/// Most bytes one read takes from the stream.
pub const READ_SLICE: usize = 64 * 1024;
/// With more than this buffered, the reader yields to other tasks after each read.
pub const YIELD_PAST: usize = 64 * 1024;
/// Frames up to this size are copied out of the read buffer (whose copy is zeroed); larger ones
/// take the buffer with them.
const COPY_MAX: usize = 64 * 1024;

/// What one value costs in decoded form beyond its payload: its `rmpv::Value` slot.
const VALUE_COST: u64 = std::mem::size_of::<rmpv::Value>() as u64;
/// What a heap allocation (a string, a binary, a container's elements) costs beyond its bytes.
const ALLOC_COST: u64 = 32;

/// The limits a frame is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub frame: usize,
    pub depth: usize,
    pub elements: u64,
    pub decoded: u64,
}

impl Limits {
    /// The daemon's limits (docs/protocol.md §2).
    pub const DAEMON: Limits =
        Limits { frame: MAX_FRAME, depth: MAX_DEPTH, elements: MAX_ELEMENTS, decoded: MAX_DECODED };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DAEMON
    }
}

/// Why a byte stream could not be split into frames. Every variant ends that connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("frame declares more than {limit} array/map elements")]
    TooManyElements { limit: u64 },
    #[error("frame would take more than {limit} bytes decoded")]
    TooBigDecoded { limit: u64 },
    #[error("invalid MessagePack marker byte 0x{0:02x}")]
    InvalidMarker(u8),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },
    #[error("frame incomplete after {}s ({buffered} bytes buffered)", .after.as_secs())]
    Timeout { after: Duration, buffered: usize },
    #[error("i/o error while reading a frame")]
    Io(#[from] std::io::Error),
}

/// Incremental scanner: remembers how far into the current frame it has validated.
#[derive(Debug, Default)]
pub struct Scanner {
    pos: usize,
    /// Items still expected in each open container (maps count keys and values).
    open: Vec<u64>,
    /// Elements declared so far in this frame.
    elements: u64,
    /// Estimated decoded size so far.
    decoded: u64,
}

/// What one marker byte says about the value it starts.
enum Shape {
    /// Total header length and payload length known from the marker alone.
    Fixed { header: usize, payload: u64 },
    /// Header carries a big-endian length of `len_bytes` after `skip` bytes; payload follows.
    Sized { len_bytes: usize, extra_header: usize },
    /// A container with `items` children following a header of `header` bytes.
    Container { header: usize, items: u64 },
    /// A container whose element count is a big-endian integer of `len_bytes` bytes.
    SizedContainer { len_bytes: usize, per_entry: u64 },
}

fn shape(marker: u8) -> Result<Shape, FrameError> {
    use Shape::*;
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Fixed { header: 1, payload: 0 },
        0x80..=0x8f => Container { header: 1, items: 2 * u64::from(marker & 0x0f) },
        0x90..=0x9f => Container { header: 1, items: u64::from(marker & 0x0f) },
        0xa0..=0xbf => Fixed { header: 1, payload: u64::from(marker & 0x1f) },
        0xc4 | 0xd9 => Sized { len_bytes: 1, extra_header: 0 },
        0xc5 | 0xda => Sized { len_bytes: 2, extra_header: 0 },
        0xc6 | 0xdb => Sized { len_bytes: 4, extra_header: 0 },
        0xc7 => Sized { len_bytes: 1, extra_header: 1 },
        0xc8 => Sized { len_bytes: 2, extra_header: 1 },
        0xc9 => Sized { len_bytes: 4, extra_header: 1 },
        0xca => Fixed { header: 1, payload: 4 },
        0xcb => Fixed { header: 1, payload: 8 },
        0xcc..=0xcf => Fixed { header: 1, payload: 1 << (marker - 0xcc) },
        0xd0..=0xd3 => Fixed { header: 1, payload: 1 << (marker - 0xd0) },
        0xd4..=0xd8 => Fixed { header: 2, payload: 1 << (marker - 0xd4) },
        0xdc => SizedContainer { len_bytes: 2, per_entry: 1 },
        0xdd => SizedContainer { len_bytes: 4, per_entry: 1 },
        0xde => SizedContainer { len_bytes: 2, per_entry: 2 },
        0xdf => SizedContainer { len_bytes: 4, per_entry: 2 },
        0xc1 => return Err(FrameError::InvalidMarker(marker)),
    })
}

/// Whether a marker starts a value whose payload is copied to its own allocation when decoded
/// (strings, binaries, extensions; fixstr included).
fn allocates(marker: u8) -> bool {
    matches!(marker, 0xa0..=0xbf | 0xc4..=0xc9 | 0xd4..=0xd8 | 0xd9..=0xdb)
}

fn be_len(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

impl Scanner {
    /// Scans `buf` (which always starts at the current frame's first byte) and returns the length
    /// of the first complete frame, or `None` if more bytes are needed.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
        loop {
            let Some(&marker) = buf.get(self.pos) else { return Ok(None) };
            let (header, payload, items, container) = match shape(marker)? {
                Shape::Fixed { header, payload } => (header, payload, 0, false),
                Shape::Container { header, items } => (header, 0, items, true),
                Shape::Sized { len_bytes, extra_header } => {
                    let Some(len) = buf.get(self.pos + 1..self.pos + 1 + len_bytes) else { return Ok(None) };
                    (1 + len_bytes + extra_header, be_len(len), 0, false)
                }
                Shape::SizedContainer { len_bytes, per_entry } => {
                    let Some(len) = buf.get(self.pos + 1..self.pos + 1 + len_bytes) else { return Ok(None) };
                    (1 + len_bytes, 0, be_len(len) * per_entry, true)
                }
            };
            // A container, empty or not, is one level deeper than those open around it.
            if container && self.open.len() >= limits.depth {
                return Err(FrameError::TooDeep { limit: limits.depth });
            }
            let end = (self.pos as u64).saturating_add(header as u64).saturating_add(payload);
            // Every item needs at least one more byte, so a declared count beyond the limit is too large.
            if end.saturating_add(items) > limits.frame as u64 {
                return Err(FrameError::TooLarge { limit: limits.frame });
            }
            // Counted from the header: before the payload or the elements are buffered.
            let cost = VALUE_COST
                + if allocates(marker) { payload + ALLOC_COST } else { 0 }
                + if items > 0 { ALLOC_COST } else { 0 };
            self.elements = self.elements.saturating_add(items);
            self.decoded = self.decoded.saturating_add(cost);
            if self.elements > limits.elements {
                return Err(FrameError::TooManyElements { limit: limits.elements });
            }
            if self.decoded > limits.decoded {
                return Err(FrameError::TooBigDecoded { limit: limits.decoded });
            }
            let end = end as usize;
            if buf.len() < end {
                // Resumed at this marker: take back what this value was charged.
                self.elements -= items;
                self.decoded -= cost;
                return Ok(None);
            }
            self.pos = end;
            if items > 0 {
                self.open.push(items);
                continue;
            }
            // A value is complete: close every container it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
                        self.elements = 0;
                        self.decoded = 0;
                        return Ok(Some(len));
                    }
                    Some(remaining) => {
                        *remaining -= 1;
                        if *remaining > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Reads whole MessagePack frames from an async byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// Bytes read: `buf[start..]` is unconsumed (the current frame first); `buf[..start]` is zeroed.
    buf: Vec<u8>,
    start: usize,
    scanner: Scanner,
    limits: Limits,
    /// An incomplete frame closes the stream after this long (`None`: never).
    frame_timeout: Option<Duration>,
    /// When the first byte of the incomplete frame in `buf` arrived.
    frame_began: Option<Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::DAEMON)
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            scanner: Scanner::default(),
            limits,
            frame_timeout: None,
            frame_began: None,
        }
    }

    /// A frame whose first byte arrived more than `timeout` ago and that is still incomplete ends
    /// [`FrameReader::next_frame`] with [`FrameError::Timeout`].
    pub fn with_frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = Some(timeout);
        self
    }

    /// Bytes read and not yet handed out in a frame.
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Moves the unconsumed bytes to the front, zeroing where they were, so there is room to read
    /// without growing and no stale copy of a consumed or moved byte stays behind.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let len = self.buf.len();
        self.buf.copy_within(self.start.., 0);
        let kept = len - self.start;
        self.buf[kept..].fill(0);
        self.buf.truncate(kept);
        self.start = 0;
    }

    /// Reads once into `buf` (at most [`READ_SLICE`] bytes, growing it at most to the frame limit
    /// plus one read); returns the number of bytes read. Past [`YIELD_PAST`] buffered bytes it
    /// yields after the read (cancel-safe: the bytes read stay buffered).
    async fn read_more(&mut self, want: usize) -> std::io::Result<usize> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < want {
            let cap = self.buf.capacity().max(16 * 1024);
            let target = (cap * 2).min(self.limits.frame + want).max(self.buf.len() + want);
            self.buf.reserve_exact(target - self.buf.len());
        }
        let n = self.inner.read_buf(&mut (&mut self.buf).limit(READ_SLICE)).await?;
        if self.pending() > YIELD_PAST {
            tokio::task::yield_now().await;
        }
        Ok(n)
    }

    /// Takes the first `len` unconsumed bytes as a frame.
    fn take_frame(&mut self, len: usize) -> Bytes {
        self.frame_began = None;
        if len <= COPY_MAX || self.start != 0 {
            let range = self.start..self.start + len;
            let frame = Bytes::copy_from_slice(&self.buf[range.clone()]);
            self.buf[range].fill(0);
            self.start += len;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            return frame;
        }
        // A big frame at the front: it takes the buffer; bytes after it move to a new one.
        let rest = self.buf[len..].to_vec();
        self.buf[len..].fill(0);
        self.buf.truncate(len);
        let mut next = Vec::with_capacity(rest.len().max(16 * 1024));
        next.extend_from_slice(&rest);
        Bytes::from(std::mem::replace(&mut self.buf, next))
    }

    /// Resolves when the peer ends the stream (`Ok`) or it fails (`Err`), reading ahead at most
    /// [`READ_AHEAD`] bytes into the frame buffer; with that much buffered it waits forever. For a
    /// caller that is not taking frames (backpressure) but must notice a hang-up. Cancel-safe:
    /// bytes read stay buffered for [`FrameReader::next_frame`].
    pub async fn closed(&mut self) -> std::io::Result<()> {
        while self.pending() < READ_AHEAD {
            if self.read_more(READ_AHEAD - self.pending()).await? == 0 {
                return Ok(());
            }
        }
        std::future::pending().await
    }

    /// The next whole frame; `Ok(None)` on a clean end of stream between frames.
    ///
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            let start = self.start;
            if let Some(len) = self.scanner.scan(&self.buf[start..], &self.limits)? {
                return Ok(Some(self.take_frame(len)));
            }
            if self.pending() > 0 && self.frame_began.is_none() {
                self.frame_began = Some(Instant::now());
            }
            let read = match (self.frame_timeout, self.frame_began) {
                (Some(after), Some(began)) => {
                    match tokio::time::timeout_at(began + after, self.read_more(16 * 1024)).await {
                        Ok(r) => r?,
                        Err(_) => return Err(FrameError::Timeout { after, buffered: self.pending() }),
                    }
                }
                _ => self.read_more(16 * 1024).await?,
            };
            if read == 0 {
                return if self.pending() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::TruncatedFrame { buffered: self.pending() })
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }

    fn sample() -> Value {
        Value::Array(vec![
            Value::from(0),
            Value::from(u32::MAX),
            Value::from("daemon.info"),
            Value::Array(vec![Value::Map(vec![
                (Value::from("s"), Value::from("x".repeat(300))),
                (Value::from("b"), Value::Binary(vec![7; 70_000])),
                (Value::from("f"), Value::F64(1.5)),
                (Value::from("n"), Value::from(-5_000_000_000i64)),
                (Value::from("e"), Value::Ext(3, vec![1; 16])),
                (Value::from("e2"), Value::Ext(4, vec![1; 300])),
                (Value::from("arr"), Value::Array((0..40).map(Value::from).collect())),
                (Value::from("empty"), Value::Array(vec![])),
                (Value::from("nil"), Value::Nil),
            ])]),
        ])
    }

    #[test]
    fn finds_frame_boundaries_byte_by_byte() {
        let one = encode(&sample());
        let mut stream = one.clone();
        stream.extend_from_slice(&one);
        let mut sc = Scanner::default();
        let mut found = None;
        for end in 1..=stream.len() {
            if let Some(len) = sc.scan(&stream[..end], &Limits::DAEMON).expect("scan") {
                found = Some((end, len));
                break;
            }
        }
        assert_eq!(found, Some((one.len(), one.len())));
    }

    #[test]
    fn rejects_oversized_header_before_body() {
        // bin32 declaring 20 MiB: rejected from the 5-byte header alone.
        let header = [0xc6, 0x01, 0x40, 0x00, 0x00];
        let err = Scanner::default().scan(&header, &Limits::DAEMON).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { .. }));
        // array32 declaring 2^32-1 elements.
        let header = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(Scanner::default().scan(&header, &Limits::DAEMON).is_err());
    }

    #[test]
    fn rejects_deep_nesting_and_bad_marker() {
        let deep = vec![0x91u8; 65];
        assert!(matches!(Scanner::default().scan(&deep, &Limits::DAEMON), Err(FrameError::TooDeep { .. })));
        let ok_depth: Vec<u8> = std::iter::repeat_n(0x91u8, 64).chain([0xc0]).collect();
        assert_eq!(Scanner::default().scan(&ok_depth, &Limits::DAEMON).expect("ok"), Some(65));
        // An empty container is a level too.
        let ok_empty: Vec<u8> = std::iter::repeat_n(0x91u8, 63).chain([0x80]).collect();
        assert_eq!(Scanner::default().scan(&ok_empty, &Limits::DAEMON).expect("ok"), Some(64));
        let deep_empty: Vec<u8> = std::iter::repeat_n(0x91u8, 64).chain([0x90]).collect();
        assert!(matches!(Scanner::default().scan(&deep_empty, &Limits::DAEMON), Err(FrameError::TooDeep { .. })));
        assert!(matches!(Scanner::default().scan(&[0xc1], &Limits::DAEMON), Err(FrameError::InvalidMarker(0xc1))));
    }

    #[tokio::test]
    async fn reader_splits_many_messages_and_reports_truncation() {
        let one = encode(&sample());
        let mut data = Vec::new();
        for _ in 0..3 {
            data.extend_from_slice(&one);
        }
        data.extend_from_slice(&one[..10]);
        let mut reader = FrameReader::new(&data[..]);
        for _ in 0..3 {
            let frame = reader.next_frame().await.expect("frame").expect("some");
            assert_eq!(&frame[..], &one[..]);
        }
        assert!(matches!(reader.next_frame().await, Err(FrameError::TruncatedFrame { buffered: 10 })));
        let mut empty = FrameReader::new(&[][..]);
        assert!(empty.next_frame().await.expect("eof").is_none());
    }
    #[test]
    fn counts_elements_and_decoded_size_from_headers() {
        // One array declaring one element too many: refused from its 5-byte header.
        let mut header = vec![0xdd];
        header.extend_from_slice(&(MAX_ELEMENTS as u32 + 1).to_be_bytes());
        let err = Scanner::default().scan(&header, &Limits::DAEMON).expect_err("too many");
        assert!(matches!(err, FrameError::TooManyElements { limit: MAX_ELEMENTS }), "{err}");
        // 16 MiB of empty maps in one array: refused from the header too.
        let mut maps = vec![0xdd];
        maps.extend_from_slice(&(16u32 * 1024 * 1024 - 5).to_be_bytes());
        assert!(Scanner::default().scan(&maps, &Limits::DAEMON).is_err());
        // Two arrays of 600k: the second header crosses the total.
        let mut two = vec![0x92, 0xdd];
        two.extend_from_slice(&600_000u32.to_be_bytes());
        two.extend(std::iter::repeat_n(0xc0, 600_000));
        two.push(0xdd);
        two.extend_from_slice(&600_000u32.to_be_bytes());
        let err = Scanner::default().scan(&two, &Limits::DAEMON).expect_err("too many in total");
        assert!(matches!(err, FrameError::TooManyElements { .. }), "{err}");
        // Under the element limit but over the decoded estimate: many short strings.
        let limits = Limits { decoded: 10_000, ..Limits::DAEMON };
        let strings = encode(&Value::Array((0..200).map(|i| Value::from(format!("s{i}"))).collect()));
        let err = Scanner::default().scan(&strings, &limits).expect_err("too big decoded");
        assert!(matches!(err, FrameError::TooBigDecoded { limit: 10_000 }), "{err}");
        // The counts start again with each frame.
        let small = encode(&Value::Array(vec![Value::Nil; 6]));
        let limits = Limits { elements: 10, ..Limits::DAEMON };
        let mut sc = Scanner::default();
        let stream = [small.clone(), small.clone()].concat();
        assert_eq!(sc.scan(&stream, &limits).expect("first"), Some(small.len()));
        assert_eq!(sc.scan(&stream[small.len()..], &limits).expect("second"), Some(small.len()));
    }

    #[test]
    fn a_resumed_scan_charges_each_value_once() {
        // An array of ten 2-byte strings, fed byte by byte: its exact estimate passes, one less fails.
        let frame = encode(&Value::Array((0..10).map(|i| Value::from(format!("v{i}"))).collect()));
        let exact = VALUE_COST + ALLOC_COST + 10 * (VALUE_COST + 2 + ALLOC_COST);
        let byte_by_byte = |decoded| {
            let limits = Limits { elements: 10, decoded, ..Limits::DAEMON };
            let mut sc = Scanner::default();
            (1..=frame.len()).try_fold(None, |found, end| match found {
                Some(len) => Ok(Some(len)),
                None => sc.scan(&frame[..end], &limits),
            })
        };
        assert_eq!(byte_by_byte(exact).expect("within limits"), Some(frame.len()));
        assert!(matches!(byte_by_byte(exact - 1), Err(FrameError::TooBigDecoded { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_frame_times_out_and_a_slow_complete_one_does_not() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server).with_frame_timeout(Duration::from_secs(10));
        let one = encode(&sample_small());
        use tokio::io::AsyncWriteExt as _;
        // Idle between frames is not a partial frame: no timeout.
        let idle = tokio::time::timeout(Duration::from_secs(30), reader.next_frame()).await;
        assert!(idle.is_err(), "an idle connection must not time out");
        // Half a frame, the rest after 5 s: fine.
        client.write_all(&one[..3]).await.expect("write");
        let writer = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            client.write_all(&one[3..]).await.expect("write");
            client.write_all(&one[..3]).await.expect("write");
            client
        };
        let (frame, _client) = tokio::join!(reader.next_frame(), writer);
        assert_eq!(&frame.expect("frame").expect("some")[..], &one[..]);
        // The next frame never completes: closed 10 s after its first byte.
        let t0 = tokio::time::Instant::now();
        let err = reader.next_frame().await.expect_err("timeout");
        assert!(matches!(err, FrameError::Timeout { buffered: 3, .. }), "{err}");
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
    }

    fn sample_small() -> Value {
        Value::Array(vec![Value::from(0), Value::from(1), Value::from("daemon.ping"), Value::Array(vec![])])
    }

    #[tokio::test]
    async fn frames_taken_leave_no_copy_in_the_buffer() {
        let secret = "sk-secret-canary-0123456789";
        let req = |big: usize| {
            encode(&Value::Array(vec![
                Value::from(0),
                Value::from(1),
                Value::from("keys.set"),
                Value::Array(vec![Value::Map(vec![
                    (Value::from("secret"), Value::from(secret)),
                    (Value::from("pad"), Value::Binary(vec![0; big])),
                ])]),
            ]))
        };
        let (small, big) = (req(10), req(100_000));
        let mut data = Vec::new();
        data.extend_from_slice(&small);
        data.extend_from_slice(&big);
        data.extend_from_slice(&small[..small.len() - 1]);
        let mut reader = FrameReader::new(&data[..]);
        let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret.as_bytes());
        let first = reader.next_frame().await.expect("frame").expect("some");
        assert_eq!(&first[..], &small[..]);
        let second = reader.next_frame().await.expect("frame").expect("some");
        assert_eq!(&second[..], &big[..]);
        // The unconsumed bytes hold the third frame's secret; everything before them is zeroed.
        assert!(!contains(&reader.buf[..reader.start]));
        assert!(matches!(reader.next_frame().await, Err(FrameError::TruncatedFrame { .. })));
        reader.compact();
        assert_eq!(reader.buf.len(), small.len() - 1);
    }

    /// A big frame from a stream that is always ready (a slice never returns `Pending`) is read
    /// in slices, letting other tasks of a one-thread runtime run between them; a small one is
    /// read without yielding.
    #[tokio::test(flavor = "current_thread")]
    async fn a_big_frame_lets_other_tasks_run_while_it_is_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ticks = std::sync::Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let small = encode(&sample_small());
        let big = encode(&Value::Array(vec![
            Value::from(0),
            Value::from(1),
            Value::from("daemon.ping"),
            Value::Array(vec![Value::Binary(vec![7; 2 * 1024 * 1024])]),
        ]));
        let mut data = small.clone();
        data.extend_from_slice(&big);
        let mut reader = FrameReader::new(&data[..]);
        assert_eq!(&reader.next_frame().await.expect("frame").expect("some")[..], &small[..]);
        assert_eq!(ticks.load(Ordering::Relaxed), 0, "a small frame is read without yielding");
        assert_eq!(&reader.next_frame().await.expect("frame").expect("some")[..], &big[..]);
        let slices = big.len().div_ceil(READ_SLICE);
        let ran = ticks.load(Ordering::Relaxed);
        assert!(ran + 2 >= slices - YIELD_PAST / READ_SLICE, "other tasks ran {ran} times over {slices} slices");
        ticker.abort();
    }
}
