//! Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
//!
//! Strict on purpose, as a smuggling defence: hex sizes of at most 16
//! digits, CRLF line endings only, bounded extensions and trailers. The
//! decoder stops right after the final CRLF so that pipelined bytes stay with
//! the caller.
//!
//! Trailer fields are validated as header fields (token names; no control
//! characters in values) and those that must not be trailers (framing,
//! routing, authentication, caching fields: RFC 9110 §6.5.1) are dropped. A
//! relay ([`ChunkedDecoder::relay`]) forwards the body in canonical form:
//! each chunk-size line as `{hex}\r\n` without extensions or whitespace,
//! the data, the validated trailers. The next hop reads the framing this
//! decoder read, whatever leniency it has (`3 \r\n`, `3;x\r\n`).

use bytes::BufMut;
use thiserror::Error;

/// Why a chunked body was rejected.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk-size line is not a hexadecimal number.
    #[error("invalid chunk size")]
    InvalidSize,
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size overflows")]
    SizeOverflow,
    /// A line did not end with CRLF, or chunk data overran its size.
    #[error("bad line ending in chunked body")]
    BadLineEnding,
    /// Chunk extensions and trailer fields together exceed the limit.
    #[error("chunk extensions or trailers too large")]
    TrailerTooLarge,
    /// A trailer line is not a valid header field.
    #[error("invalid trailer field")]
    InvalidTrailer,
}

/// Fields that must not be sent as trailers, so a relay drops them: they
/// frame, route, authenticate or control caching of the message, and a
/// recipient that merged them into the head would be steered by them.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "expect",
    "expires",
    "host",
    "keep-alive",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "www-authenticate",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer { line_len: usize },
    TrailerLf { line_len: usize },
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of extensions and trailers seen so far.
    overhead: usize,
    /// Most bytes of extensions and trailers accepted, in bytes.
    max_overhead: usize,
    /// Payload bytes decoded so far.
    decoded: u64,
    /// The trailer line being read (bounded by `max_overhead`).
    line: Vec<u8>,
    /// Accepted trailer lines, each with its CRLF.
    trailers: Vec<u8>,
}

/// What [`ChunkedDecoder::parts`] found in its input, in order.
enum Part<'a> {
    /// A chunk of this many bytes starts (the last, empty chunk is not one).
    Size(u64),
    /// Payload bytes.
    Data(&'a [u8]),
    /// The CRLF after a chunk's data.
    ChunkEnd,
}

/// Writes `{size:x}\r\n` into `line`; returns its length.
fn hex_line(size: u64, line: &mut [u8; 18]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (k, slot) in line[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - k);
        *slot = DIGITS[((size >> shift) & 0xf) as usize];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    digits + 2
}

impl ChunkedDecoder {
    /// A decoder that accepts at most `max_overhead` bytes of chunk
    /// extensions and trailer fields in total.
    pub fn new(max_overhead: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            overhead: 0,
            max_overhead,
            decoded: 0,
            line: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes decoded so far (the body's length without framing).
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Payload bytes decoded so far plus those the current chunk still
    /// announces: lets a caller refuse an oversized body before it arrives.
    pub fn announced(&self) -> u64 {
        let pending = if self.state == State::Data {
            self.size
        } else {
            0
        };
        self.decoded.saturating_add(pending)
    }

    /// Consumes framing from `input`, handing every run of payload bytes to
    /// `data`. Returns how many bytes of `input` belong to this body; it is
    /// less than `input.len()` only once the body is complete.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        self.parts(input, |p| {
            if let Part::Data(d) = p {
                data(d)
            }
        })
    }

    /// As [`Self::feed`], and appends to `out` the body in canonical form:
    /// what a relay forwards (see the module's doc).
    pub fn relay(
        &mut self,
        input: &[u8],
        out: &mut impl BufMut,
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let was_done = self.is_done();
        let n = self.parts(input, |p| match p {
            Part::Size(size) => {
                let mut line = [0u8; 18];
                let len = hex_line(size, &mut line);
                out.put_slice(&line[..len]);
            }
            Part::Data(d) => {
                out.put_slice(d);
                data(d);
            }
            Part::ChunkEnd => out.put_slice(b"\r\n"),
        })?;
        if self.is_done() && !was_done {
            out.put_slice(b"0\r\n");
            out.put_slice(&self.trailers);
            out.put_slice(b"\r\n");
        }
        Ok(n)
    }

    fn parts(&mut self, input: &[u8], mut part: impl FnMut(Part<'_>)) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    part(Part::Data(&input[i..i + n]));
                    self.size -= n as u64;
                    self.decoded += n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size => match hex(b) {
                    Some(v) => {
                        if self.digits == 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = self.size << 4 | u64::from(v);
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err(ChunkError::InvalidSize),
                    None => self.state = self.after_size(b)?,
                },
                State::SizeWs => self.state = self.after_size(b)?,
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => self.count_overhead()?,
                    _ => return Err(ChunkError::InvalidSize),
                },
                State::SizeLf => {
                    expect(b, b'\n')?;
                    self.state = if self.size == 0 {
                        State::Trailer { line_len: 0 }
                    } else {
                        part(Part::Size(self.size));
                        State::Data
                    };
                }
                State::DataCr => {
                    expect(b, b'\r')?;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    expect(b, b'\n')?;
                    part(Part::ChunkEnd);
                    self.state = State::Size;
                    self.digits = 0;
                }
                State::Trailer { line_len } => match b {
                    b'\r' => self.state = State::TrailerLf { line_len },
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => {
                        self.count_overhead()?;
                        self.line.push(b);
                        self.state = State::Trailer {
                            line_len: line_len + 1,
                        };
                    }
                },
                State::TrailerLf { line_len } => {
                    expect(b, b'\n')?;
                    self.state = if line_len == 0 {
                        State::Done
                    } else {
                        self.accept_trailer()?;
                        State::Trailer { line_len: 0 }
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn after_size(&self, b: u8) -> Result<State, ChunkError> {
        match b {
            b' ' | b'\t' => Ok(State::SizeWs),
            b';' => Ok(State::Ext),
            b'\r' => Ok(State::SizeLf),
            b'\n' => Err(ChunkError::BadLineEnding),
            _ => Err(ChunkError::InvalidSize),
        }
    }

    /// Validates the trailer line just read; keeps it unless its field
    /// must not be a trailer.
    fn accept_trailer(&mut self) -> Result<(), ChunkError> {
        let line = std::mem::take(&mut self.line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ChunkError::InvalidTrailer)?;
        let (name, value) = line.split_at(colon);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ChunkError::InvalidTrailer);
        }
        if value
            .iter()
            .skip(1)
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(ChunkError::InvalidTrailer);
        }
        let forbidden = FORBIDDEN_TRAILERS
            .iter()
            .any(|f| f.as_bytes().eq_ignore_ascii_case(name));
        if !forbidden {
            self.trailers.extend_from_slice(&line);
            self.trailers.extend_from_slice(b"\r\n");
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }

    fn count_overhead(&mut self) -> Result<(), ChunkError> {
        self.overhead += 1;
        if self.overhead > self.max_overhead {
            return Err(ChunkError::TrailerTooLarge);
        }
        Ok(())
    }
}

fn expect(b: u8, want: u8) -> Result<(), ChunkError> {
    if b == want {
        Ok(())
    } else {
        Err(ChunkError::BadLineEnding)
    }
}

/// A `tchar` of RFC 9110 §5.6.2: the characters of a field name.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        let first = d.feed(&input[..split], |b| out.extend_from_slice(b))?;
        let mut used = first;
        if first == split {
            used += d.feed(&input[split..], |b| out.extend_from_slice(b))?;
        }
        assert!(d.is_done(), "not done for split {split}");
        Ok((out, used))
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6 \r\nworld!\r\n0\r\nX-Trailer: a\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for split in 0..=body.len() {
            let (out, used) = decode_split(body, split).unwrap();
            assert_eq!(out, b"hello world!");
            assert_eq!(used, end, "split {split}");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        let table: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::InvalidSize),
            (b"\r\n", ChunkError::InvalidSize),
            (b"-1\r\n", ChunkError::InvalidSize),
            (b"0x5\r\n", ChunkError::InvalidSize),
            (b"5\nhello", ChunkError::BadLineEnding),
            (b"5\r\nhelloXX", ChunkError::BadLineEnding),
            (b"11111111111111111\r\n", ChunkError::SizeOverflow),
            (b"1;\x01\r\n", ChunkError::InvalidSize),
            (b"0\r\nfoo\n", ChunkError::BadLineEnding),
        ];
        for (input, want) in table {
            let mut d = ChunkedDecoder::new(1024);
            assert_eq!(
                d.feed(input, |_| {}),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trailers_are_validated_and_forbidden_ones_dropped() {
        let body =
            b"3\r\nabc\r\n0\r\nX-Sum: 9\r\nContent-Length: 5\r\nHost: evil\r\nX-Ok: a\tb\r\n\r\n";
        for split in 0..=body.len() {
            let mut d = ChunkedDecoder::new(1024);
            let mut relayed = Vec::new();
            for part in [&body[..split], &body[split..]] {
                d.relay(part, &mut relayed, |_| {}).unwrap();
            }
            assert!(d.is_done());
            assert_eq!(
                String::from_utf8_lossy(&relayed),
                "3\r\nabc\r\n0\r\nX-Sum: 9\r\nX-Ok: a\tb\r\n\r\n",
                "split {split}"
            );
        }
        let table: &[&[u8]] = &[
            b"0\r\nNo colon\r\n\r\n",
            b"0\r\nBad name: 1\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\x01b\r\n\r\n",
            b"0\r\n folded: 1\r\n\r\n",
        ];
        for input in table {
            let mut d = ChunkedDecoder::new(1024);
            assert_eq!(
                d.feed(input, |_| {}),
                Err(ChunkError::InvalidTrailer),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_relay_sends_canonical_chunk_size_lines() {
        let body = b"3 \r\nabc\r\n1a;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n00000\r\n\r\n";
        for split in 0..=body.len() {
            let mut d = ChunkedDecoder::new(1024);
            let mut relayed = Vec::new();
            for part in [&body[..split], &body[split..]] {
                d.relay(part, &mut relayed, |_| {}).unwrap();
            }
            assert_eq!(
                String::from_utf8_lossy(&relayed),
                "3\r\nabc\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
                "split {split}"
            );
        }
        let mut line = [0u8; 18];
        let n = hex_line(u64::MAX, &mut line);
        assert_eq!(&line[..n], b"ffffffffffffffff\r\n");
        let n = hex_line(0x100, &mut line);
        assert_eq!(&line[..n], b"100\r\n");
    }

    #[test]
    fn bounds_trailers() {
        let mut d = ChunkedDecoder::new(8);
        assert_eq!(
            d.feed(b"0\r\nX-Long-Trailer: 1\r\n\r\n", |_| {}),
            Err(ChunkError::TrailerTooLarge)
        );
    }
}
