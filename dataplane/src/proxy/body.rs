//! Reading a message body out of a byte stream, whatever its framing:
//! the client's request bodies (with the body-size limit) and the
//! upstream's response bodies alike.

use crate::http::chunked::ChunkedDecoder;
use crate::http::request::RequestError;
use crate::http::Framing;
use bytes::BytesMut;

/// Most bytes of chunk extensions and trailers accepted in a request body.
const MAX_REQUEST_CHUNK_OVERHEAD: usize = 16 * 1024;
/// Most bytes of chunk extensions and trailers accepted from an upstream.
const MAX_RESPONSE_CHUNK_OVERHEAD: usize = 64 * 1024;

/// Progress through one message body.
#[derive(Debug, Clone)]
pub enum BodyReader {
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// A chunked body being decoded.
    Chunked(ChunkedDecoder),
    /// A response body delimited by the close of the connection.
    UntilClose,
    /// The body is complete (or there was none).
    Done,
}

impl BodyReader {
    /// The reader for a request with this framing (a request body is never
    /// delimited by the close).
    pub fn request(framing: Framing) -> Self {
        match framing {
            Framing::UntilClose => Self::Done,
            f => Self::new(f, MAX_REQUEST_CHUNK_OVERHEAD),
        }
    }

    /// The reader for a response with this framing.
    pub fn response(framing: Framing) -> Self {
        Self::new(framing, MAX_RESPONSE_CHUNK_OVERHEAD)
    }

    fn new(framing: Framing, chunk_overhead: usize) -> Self {
        match framing {
            Framing::Length(0) | Framing::Empty => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::new(chunk_overhead)),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Whether the body ends with the connection.
    pub fn until_close(&self) -> bool {
        matches!(self, Self::UntilClose)
    }

    /// The connection closed cleanly: a body delimited by the close is
    /// complete.
    pub fn closed(&mut self) {
        if self.until_close() {
            *self = Self::Done;
        }
    }

    /// Reads body bytes from the start of `input`, handing decoded payload
    /// to `data`. Returns how many bytes of `input` (framing included)
    /// belong to the body.
    pub fn read(
        &mut self,
        input: &[u8],
        max_body: u64,
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, RequestError> {
        let used = match self {
            Self::Done => 0,
            Self::UntilClose => {
                data(input);
                input.len()
            }
            Self::Length(remaining) => {
                let n = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                data(&input[..n]);
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = Self::Done;
                }
                n
            }
            Self::Chunked(decoder) => {
                let n = decoder
                    .feed(input, data)
                    .map_err(|_| RequestError::Malformed("invalid chunked body"))?;
                if decoder.announced() > max_body {
                    return Err(RequestError::BodyTooLarge);
                }
                if decoder.is_done() {
                    *self = Self::Done;
                }
                n
            }
        };
        Ok(used)
    }

    /// Reads body bytes from the start of `input` like [`Self::read`] and
    /// appends what a relay forwards to `out`: the bytes as they came,
    /// except a chunked body's trailer section, forwarded validated and
    /// filtered.
    pub fn forward(
        &mut self,
        input: &[u8],
        max_body: u64,
        out: &mut BytesMut,
        data: impl FnMut(&[u8]),
    ) -> Result<usize, RequestError> {
        let Self::Chunked(decoder) = self else {
            let n = self.read(input, max_body, data)?;
            out.extend_from_slice(&input[..n]);
            return Ok(n);
        };
        let n = decoder
            .relay(input, out, data)
            .map_err(|_| RequestError::Malformed("invalid chunked body"))?;
        if decoder.announced() > max_body {
            return Err(RequestError::BodyTooLarge);
        }
        if decoder.is_done() {
            *self = Self::Done;
        }
        Ok(n)
    }
}
