//! The one boundary around per-connection work: a panic in the engine or
//! the TLS layer costs its connection, is logged with the peer, and
//! counted in `ultragate_panics_total`.

use crate::status::DataplaneStatus;
use std::net::SocketAddr;

/// The message a panic carried, for the log line of a contained panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Books a panic contained to the connection from `peer`: an error line
/// naming the peer and the message, and `ultragate_panics_total`.
pub(crate) fn contained_panic(
    status: &DataplaneStatus,
    peer: Option<SocketAddr>,
    payload: &(dyn std::any::Any + Send),
) {
    status.record_panic();
    let message = panic_message(payload);
    match peer {
        Some(peer) => tracing::error!(
            %peer,
            panic = message,
            "the engine panicked: this connection is closed, every other one goes on"
        ),
        None => tracing::error!(
            panic = message,
            "the engine panicked: the event's connection is closed, every other one goes on"
        ),
    }
}
