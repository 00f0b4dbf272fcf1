//! What a completion belongs to, packed into the 64-bit `user_data`:
//! the operation's kind, the connection's slot and a generation, so a
//! completion for a connection that is gone is recognised and dropped.

/// The kind of operation a completion reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// Multishot accept on the core's listener.
    Accept = 1,
    /// Multishot recv from a client.
    Recv,
    /// A send to a client.
    Send,
    /// A cancel of a client's pending recv.
    Cancel,
    /// Connect to an upstream server.
    UpConnect,
    /// A send to an upstream server.
    UpSend,
    /// A recv from an upstream server.
    UpRecv,
    /// A read of the core's eventfd (admin answers, shutdown).
    Wake,
    /// A cancel of an upstream connect in flight.
    UpCancel,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Accept,
            2 => Self::Recv,
            3 => Self::Send,
            4 => Self::Cancel,
            5 => Self::UpConnect,
            6 => Self::UpSend,
            7 => Self::UpRecv,
            8 => Self::Wake,
            9 => Self::UpCancel,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Op {
    /// What the operation was.
    pub(super) kind: Kind,
    /// The connection's slot.
    pub(super) slot: u32,
    /// The slot's (or its upstream's) generation when the operation was
    /// submitted.
    pub(super) gen: u32,
}

impl Op {
    /// An operation of `kind` for `slot` at generation `gen` (slots are
    /// below 2^24).
    pub(super) fn new(kind: Kind, slot: u32, gen: u32) -> Self {
        Self { kind, slot, gen }
    }

    /// Packs into `user_data`.
    pub(super) fn encode(self) -> u64 {
        (self.kind as u64) << 56 | u64::from(self.slot & 0xff_ffff) << 32 | u64::from(self.gen)
    }

    /// Unpacks a `user_data`; `None` for one this driver did not make.
    pub(super) fn decode(v: u64) -> Option<Self> {
        Some(Self {
            kind: Kind::from_u8((v >> 56) as u8)?,
            slot: ((v >> 32) & 0xff_ffff) as u32,
            gen: v as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for kind in [Kind::Accept, Kind::Recv, Kind::UpRecv, Kind::Wake] {
            let op = Op::new(kind, 0xab_cdef, u32::MAX - 3);
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }
}
