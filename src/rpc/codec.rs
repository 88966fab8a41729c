//! Framing for MessagePack-RPC over a byte stream.
//!
//! MessagePack-RPC has no length prefix: messages are concatenated MessagePack values. This module
//! finds where one value ends without decoding it, so that
//! - a partial read is resumed where it stopped (scanning is linear in the frame size, never
//!   quadratic, however the bytes are split across reads);
//! - many messages in one read are split apart;
//! - a frame that declares more than [`MAX_FRAME`] bytes, or nests deeper than [`MAX_DEPTH`], is
//!   rejected as soon as its header is seen, before its body is buffered.
//!
//! Invariant: [`FrameReader::next_frame`] never buffers more than `max_frame` bytes plus one read.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame the daemon accepts (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays/maps the daemon accepts.
pub const MAX_DEPTH: usize = 64;
/// How far [`FrameReader::closed`] reads ahead of the frames taken.
pub const READ_AHEAD: usize = 64 * 1024;

/// Why a byte stream could not be split into frames. Every variant ends that connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("frame nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("invalid MessagePack marker byte 0x{0:02x}")]
    InvalidMarker(u8),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },
    #[error("i/o error while reading a frame")]
    Io(#[from] std::io::Error),
}

/// Incremental scanner: remembers how far into the current frame it has validated.
#[derive(Debug, Default)]
pub struct Scanner {
    pos: usize,
    /// Items still expected in each open container (maps count keys and values).
    open: Vec<u64>,
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

fn be_len(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

impl Scanner {
    /// Scans `buf` (which always starts at the current frame's first byte) and returns the length
    /// of the first complete frame, or `None` if more bytes are needed.
    pub fn scan(&mut self, buf: &[u8], max_frame: usize, max_depth: usize) -> Result<Option<usize>, FrameError> {
        loop {
            let Some(&marker) = buf.get(self.pos) else { return Ok(None) };
            let (header, payload, items) = match shape(marker)? {
                Shape::Fixed { header, payload } => (header, payload, 0),
                Shape::Container { header, items } => (header, 0, items),
                Shape::Sized { len_bytes, extra_header } => {
                    let Some(len) = buf.get(self.pos + 1..self.pos + 1 + len_bytes) else { return Ok(None) };
                    (1 + len_bytes + extra_header, be_len(len), 0)
                }
                Shape::SizedContainer { len_bytes, per_entry } => {
                    let Some(len) = buf.get(self.pos + 1..self.pos + 1 + len_bytes) else { return Ok(None) };
                    (1 + len_bytes, 0, be_len(len) * per_entry)
                }
            };
            let end = (self.pos as u64).saturating_add(header as u64).saturating_add(payload);
            // Every item needs at least one more byte, so a declared count beyond the limit is too large.
            if end.saturating_add(items) > max_frame as u64 {
                return Err(FrameError::TooLarge { limit: max_frame });
            }
            let end = end as usize;
            if buf.len() < end {
                return Ok(None);
            }
            self.pos = end;
            if items > 0 {
                if self.open.len() >= max_depth {
                    return Err(FrameError::TooDeep { limit: max_depth });
                }
                self.open.push(items);
                continue;
            }
            // A value is complete: close every container it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
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
    buf: BytesMut,
    scanner: Scanner,
    max_frame: usize,
    max_depth: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, MAX_FRAME, MAX_DEPTH)
    }

    pub fn with_limits(inner: R, max_frame: usize, max_depth: usize) -> Self {
        Self { inner, buf: BytesMut::with_capacity(16 * 1024), scanner: Scanner::default(), max_frame, max_depth }
    }

    /// Resolves when the peer ends the stream (`Ok`) or it fails (`Err`), reading ahead at most
    /// [`READ_AHEAD`] bytes into the frame buffer; with that much buffered it waits forever. For a
    /// caller that is not taking frames (backpressure) but must notice a hang-up. Cancel-safe:
    /// bytes read stay buffered for [`FrameReader::next_frame`].
    pub async fn closed(&mut self) -> std::io::Result<()> {
        while self.buf.len() < READ_AHEAD {
            self.buf.reserve(READ_AHEAD - self.buf.len());
            if self.inner.read_buf(&mut self.buf).await? == 0 {
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
            if let Some(len) = self.scanner.scan(&self.buf, self.max_frame, self.max_depth)? {
                return Ok(Some(self.buf.split_to(len).freeze()));
            }
            self.buf.reserve(16 * 1024);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::TruncatedFrame { buffered: self.buf.len() })
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
            if let Some(len) = sc.scan(&stream[..end], MAX_FRAME, MAX_DEPTH).expect("scan") {
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
        let err = Scanner::default().scan(&header, MAX_FRAME, MAX_DEPTH).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { .. }));
        // array32 declaring 2^32-1 elements.
        let header = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(Scanner::default().scan(&header, MAX_FRAME, MAX_DEPTH).is_err());
    }

    #[test]
    fn rejects_deep_nesting_and_bad_marker() {
        let deep = vec![0x91u8; 65];
        assert!(matches!(Scanner::default().scan(&deep, MAX_FRAME, MAX_DEPTH), Err(FrameError::TooDeep { .. })));
        let ok_depth: Vec<u8> = std::iter::repeat_n(0x91u8, 64).chain([0xc0]).collect();
        assert_eq!(Scanner::default().scan(&ok_depth, MAX_FRAME, MAX_DEPTH).expect("ok"), Some(65));
        assert!(matches!(Scanner::default().scan(&[0xc1], MAX_FRAME, MAX_DEPTH), Err(FrameError::InvalidMarker(0xc1))));
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
}
