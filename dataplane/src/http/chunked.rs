//! Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
//!
//! Strict on purpose, as a smuggling defence: hex sizes of at most 16
//! digits, CRLF line endings only, bounded extensions and trailers. The
//! decoder stops right after the final CRLF so that pipelined bytes stay with
//! the caller.

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
}

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
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&input[i..i + n]);
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
                        State::Data
                    };
                }
                State::DataCr => {
                    expect(b, b'\r')?;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    expect(b, b'\n')?;
                    self.state = State::Size;
                    self.digits = 0;
                }
                State::Trailer { line_len } => match b {
                    b'\r' => self.state = State::TrailerLf { line_len },
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => {
                        self.count_overhead()?;
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
    fn bounds_trailers() {
        let mut d = ChunkedDecoder::new(8);
        assert_eq!(
            d.feed(b"0\r\nX-Long-Trailer: 1\r\n\r\n", |_| {}),
            Err(ChunkError::TrailerTooLarge)
        );
    }
}
