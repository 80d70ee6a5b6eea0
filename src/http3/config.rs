//! quinn's server and endpoint configuration from tricorn's settings.

use std::sync::Arc;

use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};

use super::cid::WorkerTaggedCids;
use crate::settings::{CongestionControl, Http3Settings};

/// ALPN token of HTTP/3 (RFC 9114 §3.1).
const ALPN_H3: &[u8] = b"h3";
/// Unidirectional streams a client may open: its control and two QPACK streams (RFC 9114
/// §6.2) and room for reserved (grease) stream types, which are read and discarded.
const UNI_STREAMS: u32 = 16;

/// What an HTTP/3 endpoint is made from.
#[derive(Clone)]
pub(crate) struct QuicConfigs {
    pub(crate) server: ServerConfig,
    pub(crate) endpoint: EndpointConfig,
}

/// Both configurations, or the one line explaining why HTTP/3 cannot start.
pub(crate) fn quic_configs(tls: &rustls::ServerConfig, settings: &Http3Settings) -> Result<QuicConfigs, String> {
    Ok(QuicConfigs { server: server_config(tls, settings)?, endpoint: endpoint_config(settings)? })
}

/// The QUIC server configuration: the TLS configuration of the TCP listener (same certificate,
/// same client-certificate rules) with ALPN `h3`, and the transport knobs. The TLS
/// configuration must allow TLS 1.3 (see [`crate::tls::TlsOptions::allows_tls13`]).
fn server_config(tls: &rustls::ServerConfig, settings: &Http3Settings) -> Result<ServerConfig, String> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // QUIC allows 0 or u32::MAX (RFC 9001 §4.6.1); 0-RTT requests can be replayed (RFC 9001
    // §9.2), so they are opt-in.
    tls.max_early_data_size = if settings.zero_rtt { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|_| "--http3 needs the TLS_AES_128_GCM_SHA256 cipher suite, which --ssl-ciphers leaves out")?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(settings)?));
    config.migration(true);
    Ok(config)
}

fn transport_config(settings: &Http3Settings) -> Result<TransportConfig, String> {
    let mut transport = TransportConfig::default();
    let idle = IdleTimeout::try_from(settings.idle_timeout).map_err(|_| "--http3-idle-timeout is too large")?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(settings.keep_alive_interval)
        .max_concurrent_bidi_streams(VarInt::from_u32(settings.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(settings.stream_receive_window))
        .receive_window(VarInt::from_u32(settings.receive_window))
        .send_window(u64::from(settings.send_window));
    match settings.congestion {
        CongestionControl::Cubic => transport.congestion_controller_factory(Arc::new(CubicConfig::default())),
        CongestionControl::NewReno => transport.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
        CongestionControl::Bbr => transport.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    Ok(transport)
}

/// The endpoint configuration: the largest UDP payload accepted and, with several workers,
/// connection IDs tagged with this worker's index.
fn endpoint_config(settings: &Http3Settings) -> Result<EndpointConfig, String> {
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(settings.max_udp_payload)
        .map_err(|_| "--http3-max-udp-payload must be between 1200 and 65527")?;
    if let Some(worker) = settings.worker_tag {
        config.cid_generator(move || Box::new(WorkerTaggedCids::new(worker)));
    }
    Ok(config)
}
