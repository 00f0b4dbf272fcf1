//! One TLS session over rustls' unbuffered API, either side: the caller
//! hands in what arrived and takes what to send; no IO and no clock
//! inside. The server side terminates clients; the client side speaks to
//! an upstream pool with `tls = true`.

use super::Failure;
use crate::http::output::Output;
use bytes::Bytes;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{Acceptor, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, ServerConfig};
use std::io::IoSlice;
use std::ops::DerefMut;
use std::sync::Arc;

/// The side of an unbuffered rustls connection: what a session needs of
/// it beyond what both sides share.
pub trait Side:
    DerefMut<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    /// rustls' per-side state.
    type Data;
    /// Runs rustls over `incoming`.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// Most bytes a session holds undecoded: a record is at most 18 KiB, a
/// handshake message a few; a peer sending more without completing
/// anything is refused.
const MAX_INCOMING: usize = 64 * 1024;

/// How a finished handshake went, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// A resumed session (ticket or session id), not a full handshake.
    pub resumed: bool,
    /// TLS 1.3 (else 1.2).
    pub tls13: bool,
}

/// A TLS session: decrypts what arrives, encrypts what the engine queued,
/// and keeps the records to send until they are written. Server side by
/// default; [`ClientSession`] for upstreams.
pub struct TlsSession<S: Side = UnbufferedServerConnection> {
    conn: S,
    hello: Hello,
    incoming: Vec<u8>,
    out: Output,
    open: bool,
    started: bool,
    close_queued: bool,
}

/// The name a client's ClientHello asked for (SNI), read by a rustls
/// [`Acceptor`] alongside the unbuffered session, which does not tell it:
/// the engine ties each request's `Host` to the certificate it chose.
enum Hello {
    /// Still reading the ClientHello.
    Reading(Box<Acceptor>),
    /// Read: the name, if the client sent one.
    Read(Option<Box<str>>),
    /// A client session: nothing to read.
    Client,
}

/// The client side, for upstream connections.
pub type ClientSession = TlsSession<UnbufferedClientConnection>;

impl TlsSession {
    /// A session that will answer a ClientHello with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut s = Self::over(UnbufferedServerConnection::new(config)?, false);
        s.hello = Hello::Reading(Box::default());
        Ok(s)
    }
}

impl ClientSession {
    /// A session to the server `name`, its ClientHello queued.
    pub fn client(
        config: Arc<ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, Failure> {
        let conn =
            UnbufferedClientConnection::new(config, name).map_err(|e| Failure::of(&e, false))?;
        let mut s = Self::over(conn, true);
        s.run(&mut |_| {})?;
        Ok(s)
    }
}

impl<S: Side> TlsSession<S> {
    fn over(conn: S, started: bool) -> Self {
        Self {
            conn,
            hello: Hello::Client,
            incoming: Vec::new(),
            out: Output::with_capacity(0),
            open: false,
            started,
            close_queued: false,
        }
    }

    /// The name the ClientHello asked for: `None` until it was read,
    /// `Some(None)` when it named none.
    pub fn client_hello_name(&self) -> Option<Option<&str>> {
        match &self.hello {
            Hello::Read(name) => Some(name.as_deref()),
            _ => None,
        }
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        !self.open
    }

    /// Takes bytes from the peer; the decrypted application data goes to
    /// `deliver`. Returns how the handshake went when it finishes with
    /// this call. An error means the connection must close; its records
    /// (an alert) may still be queued.
    pub fn recv(
        &mut self,
        data: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Handshake>, Failure> {
        if let (false, Some(&first)) = (self.started, data.first()) {
            self.started = true;
            // A TLS connection starts with a handshake record (22); a
            // letter is a plain HTTP request sent to the TLS port.
            match first {
                22 => {}
                b if b.is_ascii_uppercase() => return Err(Failure::PlaintextHttp),
                _ => return Err(Failure::NotTls),
            }
        }
        if let Hello::Reading(acceptor) = &mut self.hello {
            let mut rd = data;
            while !rd.is_empty() && acceptor.read_tls(&mut rd).is_ok_and(|n| n > 0) {}
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let name = accepted.client_hello().server_name().map(Box::from);
                    self.hello = Hello::Read(name);
                }
                Ok(None) => {}
                // The session itself answers what is wrong with it.
                Err(_) => self.hello = Hello::Read(None),
            }
        }
        self.incoming.extend_from_slice(data);
        let was_open = self.open;
        self.run(deliver)?;
        if self.incoming.len() > MAX_INCOMING {
            return Err(Failure::Protocol);
        }
        if self.open && !was_open {
            return Ok(Some(Handshake {
                resumed: self.conn.handshake_kind() == Some(HandshakeKind::Resumed),
                tls13: self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3),
            }));
        }
        Ok(None)
    }

    /// Runs rustls over the buffered input until it needs more.
    fn run(&mut self, deliver: &mut dyn FnMut(&[u8])) -> Result<(), Failure> {
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    return Err(Failure::of(&e, self.open));
                }
            };
            let mut done = false;
            match state {
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        let record = record.map_err(|e| Failure::of(&e, true))?;
                        discard += record.discard;
                        deliver(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    write_into(&mut self.out, 1024, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    })?;
                }
                // The records stay queued until the driver writes them.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(_) => {
                    self.open = true;
                    done = true;
                }
                // Early data is never offered (no `max_early_data_size`),
                // so rustls never hands any over.
                _ => done = true,
            }
            self.incoming.drain(..discard.min(self.incoming.len()));
            if done {
                return Ok(());
            }
        }
    }

    /// Encrypts `plain` into records to send; `false` when the session
    /// cannot take application data (not open, or closing).
    pub fn encrypt(&mut self, plain: &[u8]) -> Result<bool, Failure> {
        if !self.open || self.close_queued {
            return Ok(false);
        }
        let guess = plain.len() + 64 * (plain.len() / 16384 + 1);
        let out = &mut self.out;
        let mut wrote = false;
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
            let state = state.map_err(|e| Failure::of(&e, true))?;
            let mut done = false;
            match state {
                ConnectionState::WriteTraffic(mut w) => {
                    write_into(out, guess, |buf| match w.encrypt(plain, buf) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    })?;
                    wrote = true;
                    done = true;
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    write_into(out, 1024, |buf| match encode.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    })?;
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                // Anything else (records to read first) waits for `recv`.
                _ => done = true,
            }
            self.incoming.drain(..discard.min(self.incoming.len()));
            if done {
                return Ok(wrote);
            }
        }
    }

    /// Queues a `close_notify` alert (once), so the client knows the
    /// response ended on purpose.
    pub fn queue_close(&mut self) {
        if self.close_queued || !self.open {
            return;
        }
        self.close_queued = true;
        let out = &mut self.out;
        let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
            let _ = write_into(out, 64, |buf| match w.queue_close_notify(buf) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            });
        }
        self.incoming.drain(..discard.min(self.incoming.len()));
    }

    /// Queues bytes to send as they are, outside TLS (the plain `400` for
    /// an HTTP request sent to the TLS port).
    pub fn queue_plain(&mut self, bytes: &[u8]) {
        self.out.tail().extend_from_slice(bytes);
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// The waiting bytes as slices for a vectored write.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// `n` of the waiting bytes were written.
    pub fn written(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// Keeps the waiting bytes at their addresses until written (io_uring).
    pub fn pin(&mut self) {
        self.out.freeze();
    }

    /// The oldest waiting bytes, for a plain write.
    pub fn first(&self) -> &[u8] {
        self.out.first()
    }

    /// Takes the oldest waiting bytes, for a kernel that reads them after
    /// the call returns (io_uring).
    pub fn take_first(&mut self) -> Bytes {
        self.out.take_first()
    }
}

/// Lets `f` write into `out`'s tail, growing it to the size `f` asks for
/// (`Err(Some(n))`) until it fits; `Err(None)` is a failure.
fn write_into(
    out: &mut Output,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), Failure> {
    let tail = out.tail();
    let start = tail.len();
    let mut want = guess;
    for _ in 0..4 {
        tail.resize(start + want, 0);
        match f(&mut tail[start..]) {
            Ok(n) => {
                tail.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > want => want = required,
            Err(_) => break,
        }
    }
    tail.truncate(start);
    Err(Failure::Protocol)
}
