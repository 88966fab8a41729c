//! Incremental framing of streaming bodies: Server-Sent Events and newline-delimited JSON.
//!
//! Bytes arrive in arbitrary pieces (a line, an event, or a UTF-8 character may be split across
//! reads); [`Framer::feed`] emits every complete frame and keeps the rest. SSE follows the
//! WHATWG rules that real providers rely on: lines end in CRLF, LF or CR (a CR at the end of a
//! read waits for the next byte), lines starting with `:` are comments (OpenRouter's
//! `: OPENROUTER PROCESSING`), `data:` lines of one event are joined with `\n`, a blank line
//! dispatches the event, and a single space after the colon is dropped. Unlike a browser,
//! [`Framer::finish`] dispatches a last event that has no trailing blank line (some servers end
//! the body right after `data: {...}`). NDJSON frames are non-empty lines.
//!
//! A line longer than [`MAX_LINE`] is an error rather than unbounded buffering.

use super::{Framing, ProviderError};

/// Longest line or event accepted from a provider.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One event (SSE) or one line (NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The SSE `event:` field, if any.
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    buf: Vec<u8>,
    /// SSE: the event being assembled.
    event: Option<String>,
    data: String,
    has_data: bool,
    started: bool,
}

impl Framer {
    pub fn new(framing: Framing) -> Framer {
        Framer { framing, buf: Vec::new(), event: None, data: String::new(), has_data: false, started: false }
    }

    /// Appends `bytes` and pushes every complete frame to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), ProviderError> {
        self.buf.extend_from_slice(bytes);
        // A byte-order mark is dropped only at the very start of the body: decide once the first
        // bytes either are one or cannot become one, never after a first read that was shorter
        // (a first read of `a\n` would otherwise let a later read's leading U+FEFF be dropped).
        if !self.started {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let seen = self.buf.len().min(BOM.len());
            if self.buf[..seen] != BOM[..seen] {
                self.started = true;
            } else if seen == BOM.len() {
                self.started = true;
                self.buf.drain(..BOM.len());
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                    self.line(&line, out)?;
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    if i + 1 == self.buf.len() {
                        break; // is it CRLF? wait for the next byte
                    }
                    let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                    self.line(&line, out)?;
                    i += if self.buf[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(ProviderError::Malformed(format!("a stream line exceeds {MAX_LINE} bytes")));
        }
        Ok(())
    }

    /// End of body: handles a last line without terminator and a last event without blank line.
    pub fn finish(&mut self, out: &mut Vec<Frame>) -> Result<(), ProviderError> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if !rest.is_empty() {
            let line = String::from_utf8_lossy(rest).into_owned();
            self.line(&line, out)?;
        }
        if self.framing == Framing::Sse {
            self.dispatch(out);
        }
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<Frame>) -> Result<(), ProviderError> {
        match self.framing {
            Framing::Ndjson => {
                let line = line.trim();
                if !line.is_empty() {
                    out.push(Frame { event: None, data: line.to_string() });
                }
            }
            Framing::Sse => {
                if line.is_empty() {
                    self.dispatch(out);
                    return Ok(());
                }
                if line.starts_with(':') {
                    return Ok(());
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "event" => self.event = Some(value.to_string()),
                    "data" => {
                        if self.has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.has_data = true;
                        if self.data.len() > MAX_LINE {
                            return Err(ProviderError::Malformed(format!("a stream event exceeds {MAX_LINE} bytes")));
                        }
                    }
                    _ => {} // id, retry and unknown fields do not matter here
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Frame>) {
        if self.has_data {
            out.push(Frame { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn frames(framing: Framing, input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut f = Framer::new(framing);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            f.feed(piece, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        out
    }

    fn ev(event: Option<&str>, data: &str) -> Frame {
        Frame { event: event.map(str::to_string), data: data.to_string() }
    }

    /// Found by the `stream_framer` fuzz target: after a first read of `a\n` (shorter than a
    /// BOM), a U+FEFF starting the next read was dropped as if it began the body.
    #[test]
    fn byte_order_mark_only_at_the_start_however_split() {
        for chunk in [1, 2, 3, 4, 1000] {
            let bom_first = frames(Framing::Ndjson, b"\xEF\xBB\xBFa\n", chunk);
            assert_eq!(bom_first, vec![ev(None, "a")], "chunk {chunk}");
            let bom_later = frames(Framing::Ndjson, b"a\n\xEF\xBB\xBFb\n", chunk);
            assert_eq!(bom_later, vec![ev(None, "a"), ev(None, "\u{feff}b")], "chunk {chunk}");
            let sse = frames(Framing::Sse, b"\n\xEF\xBB\xBFdata: x\n\n", chunk);
            assert!(sse.is_empty(), "chunk {chunk}: a field named U+FEFF `data` is not `data`: {sse:?}");
        }
    }

    #[test]
    fn line_endings_comments_and_multiline_data() {
        let input = b": comment\n\nevent: a\ndata: 1\ndata:2\n\ndata: x\r\n\r\ndata: y\r\rdata:z";
        let want = vec![ev(Some("a"), "1\n2"), ev(None, "x"), ev(None, "y"), ev(None, "z")];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(frames(Framing::Sse, input, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn crlf_split_across_reads_is_one_terminator() {
        let mut f = Framer::new(Framing::Sse);
        let mut out = Vec::new();
        f.feed(b"data: a\r", &mut out).unwrap();
        f.feed(b"\n\r", &mut out).unwrap();
        f.feed(b"\ndata: b\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn multibyte_characters_split_across_reads() {
        let input = "data: {\"t\":\"😋é\"}\n\n".as_bytes();
        assert_eq!(frames(Framing::Sse, input, 1), vec![ev(None, "{\"t\":\"😋é\"}")]);
    }

    #[test]
    fn ndjson_lines() {
        let input = b"{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}";
        let want = vec![ev(None, "{\"a\":1}"), ev(None, "{\"a\":2}"), ev(None, "{\"a\":3}")];
        assert_eq!(frames(Framing::Ndjson, input, 2), want);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert_eq!(frames(Framing::Sse, b"event: ping\n\n", 4), vec![]);
    }
}
