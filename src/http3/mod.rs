//! HTTP/3 (RFC 9114) over QUIC: quinn for the transport, h3 for the framing, on the same
//! loop-thread runtime as HTTP/1.1 and HTTP/2. Requests go through the same [`AsgiService`] as
//! the other versions; only the body source and the response writer differ.
//!
//! [`AsgiService`]: crate::asgi::service::AsgiService

mod body;
mod cid;
mod config;
mod connection;
mod endpoint;
mod response;
mod runtime;
mod steering;

pub(crate) use body::RequestStreamBody;
pub(crate) use config::{QuicConfigs, quic_configs};
pub(crate) use endpoint::listen;
pub(crate) use steering::steer_by_connection_id;
