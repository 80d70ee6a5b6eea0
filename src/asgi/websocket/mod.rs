//! ASGI WebSockets (ASGI WebSocket spec 2.4) over HTTP/1.1 Upgrade (RFC 6455 §4) and HTTP/2
//! extended CONNECT (RFC 8441). Framing is tungstenite's, per-message compression (RFC 7692) is
//! `deflate`. `state` holds what the application's callables (`callables`), the handshake
//! response (`handshake`) and the socket task (`socket`) share.

mod callables;
pub(crate) mod deflate;
mod handshake;
mod socket;
mod state;

use std::time::Duration;

use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

use crate::field_values::has_token;
use crate::request_fields::FieldsPresent;

pub(crate) use callables::{WsReceive, WsSend};
pub(crate) use handshake::{WsResponseFuture, start};

/// WebSocket options (uvicorn's `--ws-*`).
#[derive(Clone, Debug)]
pub(crate) struct WsSettings {
    /// Largest message accepted; a larger one closes the socket with 1009.
    pub(crate) max_size: usize,
    /// Received messages buffered for the application before the socket stops being read.
    pub(crate) max_queue: usize,
    /// Ping the client after this long.
    pub(crate) ping_interval: Option<Duration>,
    /// Close (1011) if a ping is not answered within this.
    pub(crate) ping_timeout: Option<Duration>,
    /// Accept the client's permessage-deflate offer (RFC 7692).
    pub(crate) per_message_deflate: bool,
}

/// Whether the request asks for a WebSocket: an HTTP/1.1 Upgrade (RFC 6455 §4.2.1) or an
/// HTTP/2 extended CONNECT with `:protocol = websocket` (RFC 8441 §4).
pub(crate) fn is_upgrade(parts: &Parts, fields: FieldsPresent) -> bool {
    match parts.version {
        Version::HTTP_11 => {
            parts.method == Method::GET
                && fields.upgrade()
                && fields.connection()
                && has_token(&parts.headers, &UPGRADE, "websocket")
                && has_token(&parts.headers, &CONNECTION, "upgrade")
                && parts.headers.contains_key(SEC_WEBSOCKET_KEY)
        }
        Version::HTTP_2 => {
            parts.method == Method::CONNECT
                && parts
                    .extensions
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
        }
        _ => false,
    }
}

/// The subprotocols the client offered (`Sec-WebSocket-Protocol`, comma-separated).
pub(crate) fn subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}
