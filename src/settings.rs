//! Server settings handed over by the Python package, checked once at start-up.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyDictMethods};

use crate::asgi::access_log::AccessFormat;
use crate::asgi::websocket::WsSettings;
use crate::proxy_headers::TrustedHosts;
use crate::server::ConfigError;
use crate::tls::TlsOptions;

/// Which HTTP versions the server speaks (`--http`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpVersions {
    /// HTTP/1.1 and HTTP/2 (ALPN over TLS, the preface on cleartext).
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Which proxy headers carry the client's address and scheme (`--proxy-headers-style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyStyle {
    /// `X-Forwarded-For` and `X-Forwarded-Proto`, as uvicorn.
    XForwarded,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

/// HTTP/2 knobs (RFC 9113 §6.5.2 settings and hyper's limits).
#[derive(Clone, Debug)]
pub(crate) struct Http2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub(crate) max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE (per stream).
    pub(crate) initial_stream_window_size: u32,
    /// The connection's receive window.
    pub(crate) initial_connection_window_size: u32,
    /// Grow windows from measured bandwidth-delay (overrides the two windows).
    pub(crate) adaptive_window: bool,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub(crate) max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: larger header blocks are refused (CONTINUATION floods).
    pub(crate) max_header_list_size: u32,
    /// Bytes buffered per stream before the app's `send()` waits.
    pub(crate) max_send_buf_size: usize,
    /// Streams reset by the client before the app saw them, tolerated at once (rapid reset).
    pub(crate) max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before closing the connection.
    pub(crate) max_local_error_reset_streams: usize,
    /// Send a PING this often on an idle connection.
    pub(crate) keep_alive_interval: Option<Duration>,
    /// Close the connection if a PING is not answered within this.
    pub(crate) keep_alive_timeout: Duration,
}

/// QUIC congestion controller (`--http3-congestion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CongestionControl {
    /// CUBIC (RFC 9438), quinn's default.
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
    /// BBR, quinn's experimental implementation.
    Bbr,
}

/// HTTP/3 and QUIC knobs (`--http3-*`).
#[derive(Clone, Debug)]
pub(crate) struct Http3Settings {
    /// Close a connection without any packet for this long (RFC 9000 §10.1).
    pub(crate) idle_timeout: Duration,
    /// Send a PING this often so that idle connections stay open (and NAT bindings alive).
    pub(crate) keep_alive_interval: Option<Duration>,
    /// Requests (bidirectional streams) a client may have open at once.
    pub(crate) max_concurrent_streams: u32,
    /// Bytes a client may send on one stream ahead of the application reading them.
    pub(crate) stream_receive_window: u32,
    /// Bytes a client may send on all streams of a connection ahead of the application.
    pub(crate) receive_window: u32,
    /// Bytes of response data buffered per connection before `send()` waits.
    pub(crate) send_window: u32,
    /// Largest UDP payload accepted (RFC 9000 §18.2 `max_udp_payload_size`).
    pub(crate) max_udp_payload: u16,
    /// Congestion controller.
    pub(crate) congestion: CongestionControl,
    /// Accept 0-RTT requests (replayable, RFC 9001 §9.2).
    pub(crate) zero_rtt: bool,
    /// With several workers, this worker's index, the first byte of its connection IDs.
    pub(crate) worker_tag: Option<u8>,
}

/// Everything the network side needs to know about the configuration.
pub(crate) struct Settings {
    /// ASGI `root_path`, also prefixed to `path` and `raw_path` (as uvicorn does).
    pub(crate) root_path: String,
    /// Headers added to every response before the application's (`server`, `--header`).
    pub(crate) default_headers: Vec<(HeaderName, HeaderValue)>,
    /// Add a `date` header to responses.
    pub(crate) date_header: bool,
    /// Close a keep-alive connection idle for this long.
    pub(crate) timeout_keep_alive: Duration,
    /// Close a connection whose request head is not complete this long after it began.
    pub(crate) timeout_header_read: Option<Duration>,
    /// End a request whose body stalls this long while the application waits for it.
    pub(crate) timeout_body_read: Option<Duration>,
    /// Drop a connection that accepts none of a pending response for this long.
    pub(crate) timeout_send: Option<Duration>,
    /// Drop a TLS connection whose handshake is not complete this long after it was accepted.
    pub(crate) timeout_tls_handshake: Option<Duration>,
    /// Answer 503 above this many connections or running tasks.
    pub(crate) limit_concurrency: Option<usize>,
    /// Stop accepting while this many connections are open.
    pub(crate) limit_connections: Option<usize>,
    /// Largest HTTP/1.1 request head in bytes (hyper's read buffer limit).
    pub(crate) h1_max_head_size: Option<usize>,
    /// Log one line per response on the access logger.
    pub(crate) access_log: bool,
    /// `--access-log-format`: lines written when the response is over, instead of uvicorn's.
    pub(crate) access_log_format: Option<AccessFormat>,
    /// Honour `X-Forwarded-For`/`X-Forwarded-Proto` from trusted peers.
    pub(crate) proxy_headers: bool,
    /// Peers whose proxy headers are trusted.
    pub(crate) trusted_hosts: TrustedHosts,
    /// Which headers carry client and scheme.
    pub(crate) proxy_style: ProxyStyle,
    /// Take the `host` header from a trusted proxy (`X-Forwarded-Host` or `Forwarded: host=`).
    pub(crate) forwarded_host: bool,
    /// Take scope `server`'s port from a trusted proxy's `X-Forwarded-Port`.
    pub(crate) forwarded_port: bool,
    /// Take a `root_path` prefix from a trusted proxy's `X-Forwarded-Prefix`.
    pub(crate) forwarded_prefix: bool,
    /// Largest request body accepted; bigger ones get 413.
    pub(crate) limit_request_body: Option<u64>,
    /// Run each request in a fresh `contextvars.Context()` instead of a copy of the server's.
    pub(crate) reset_contextvars: bool,
    /// HTTP versions spoken.
    pub(crate) http: HttpVersions,
    /// HTTP/2 knobs.
    pub(crate) http2: Http2Settings,
    /// TLS, when a certificate is configured.
    pub(crate) tls: Option<TlsOptions>,
    /// Serve WebSockets (`--ws` other than `none`).
    pub(crate) ws_enabled: bool,
    /// WebSocket options.
    pub(crate) ws: WsSettings,
    /// HTTP/3, when on.
    pub(crate) http3: Option<Http3Settings>,
    /// The `alt-svc` header of HTTP/1.1 and HTTP/2 responses (RFC 7838), announcing HTTP/3.
    pub(crate) alt_svc: AltSvc,
}

/// What HTTP/1.1 and HTTP/2 responses say about HTTP/3 (`--http3-alt-svc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AltSvc {
    /// `h3=":PORT"; ma=86400`, with the port of the UDP socket.
    Auto,
    /// No `alt-svc` header.
    Off,
    /// This value.
    Value(HeaderValue),
}

fn required<'py>(dict: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    dict.get_item(key)?.ok_or_else(|| PyValueError::new_err(format!("missing setting {key:?}")))
}

impl Settings {
    /// Read and validate the settings dict (keys documented in `_tricorn.pyi`).
    pub(crate) fn from_dict(dict: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut default_headers = Vec::new();
        for pair in required(dict, "default_headers")?.try_iter()? {
            let (name, value): (Vec<u8>, Vec<u8>) = pair?.extract()?;
            let name = HeaderName::from_bytes(&name).map_err(|_| {
                PyValueError::new_err(format!("invalid header name {:?}", String::from_utf8_lossy(&name)))
            })?;
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))?;
            default_headers.push((name, value));
        }
        let timeout_keep_alive = seconds(required(dict, "timeout_keep_alive")?.extract()?, "timeout_keep_alive")?;
        let allow: Vec<String> = required(dict, "forwarded_allow_ips")?.extract()?;
        Ok(Self {
            root_path: required(dict, "root_path")?.extract()?,
            default_headers,
            date_header: required(dict, "date_header")?.extract()?,
            timeout_keep_alive,
            timeout_header_read: optional_seconds(dict, "timeout_header_read")?,
            timeout_body_read: optional_seconds(dict, "timeout_body_read")?,
            timeout_send: optional_seconds(dict, "timeout_send")?,
            timeout_tls_handshake: optional_seconds(dict, "timeout_tls_handshake")?,
            limit_concurrency: required(dict, "limit_concurrency")?.extract()?,
            limit_connections: required(dict, "limit_connections")?.extract()?,
            h1_max_head_size: required(dict, "h1_max_head_size")?.extract()?,
            access_log: required(dict, "access_log")?.extract()?,
            access_log_format: required(dict, "access_log_format")?
                .extract::<Option<String>>()?
                .map(|format| AccessFormat::parse(&format).map_err(ConfigError::new_err))
                .transpose()?,
            proxy_headers: required(dict, "proxy_headers")?.extract()?,
            trusted_hosts: TrustedHosts::parse(&allow),
            proxy_style: match required(dict, "proxy_headers_style")?.extract::<String>()?.as_str() {
                "x-forwarded" => ProxyStyle::XForwarded,
                "forwarded" => ProxyStyle::Forwarded,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "proxy_headers_style must be x-forwarded or forwarded, not {other:?}"
                    )));
                }
            },
            forwarded_host: required(dict, "forwarded_host")?.extract()?,
            forwarded_port: required(dict, "forwarded_port")?.extract()?,
            forwarded_prefix: required(dict, "forwarded_prefix")?.extract()?,
            limit_request_body: required(dict, "limit_request_body")?.extract()?,
            reset_contextvars: required(dict, "reset_contextvars")?.extract()?,
            http: http_versions(&required(dict, "http")?.extract::<String>()?)?,
            http2: http2_settings(&required(dict, "http2")?.cast_into::<PyDict>()?)?,
            tls: tls_options(&required(dict, "tls")?)?,
            ws_enabled: required(dict, "ws")?.extract()?,
            ws: ws_settings(&required(dict, "ws_settings")?.cast_into::<PyDict>()?)?,
            http3: http3_settings(&required(dict, "http3")?)?,
            alt_svc: match required(dict, "alt_svc")?.extract::<Option<String>>()? {
                None => AltSvc::Auto,
                Some(value) if value.is_empty() => AltSvc::Off,
                Some(value) => AltSvc::Value(
                    HeaderValue::try_from(value).map_err(|_| PyValueError::new_err("invalid alt-svc header value"))?,
                ),
            },
        })
    }
}

fn http_versions(value: &str) -> PyResult<HttpVersions> {
    match value {
        "auto" => Ok(HttpVersions::Auto),
        "h1" => Ok(HttpVersions::Http1),
        "h2" => Ok(HttpVersions::Http2),
        other => Err(PyValueError::new_err(format!("http must be auto, h1 or h2, not {other:?}"))),
    }
}

fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!("{name} must be a positive number of seconds")))
    }
}

/// A duration in seconds where `None`, 0 or less means "no timeout".
fn optional_seconds(dict: &Bound<'_, PyDict>, key: &str) -> PyResult<Option<Duration>> {
    let value: Option<f64> = required(dict, key)?.extract()?;
    value.filter(|v| *v > 0.0).map(|v| seconds(v, key)).transpose()
}

fn http2_settings(dict: &Bound<'_, PyDict>) -> PyResult<Http2Settings> {
    let interval: Option<f64> = required(dict, "keep_alive_interval")?.extract()?;
    Ok(Http2Settings {
        max_concurrent_streams: required(dict, "max_concurrent_streams")?.extract()?,
        initial_stream_window_size: required(dict, "initial_stream_window_size")?.extract()?,
        initial_connection_window_size: required(dict, "initial_connection_window_size")?.extract()?,
        adaptive_window: required(dict, "adaptive_window")?.extract()?,
        max_frame_size: required(dict, "max_frame_size")?.extract()?,
        max_header_list_size: required(dict, "max_header_list_size")?.extract()?,
        max_send_buf_size: required(dict, "max_send_buf_size")?.extract()?,
        max_pending_accept_reset_streams: required(dict, "max_pending_accept_reset_streams")?.extract()?,
        max_local_error_reset_streams: required(dict, "max_local_error_reset_streams")?.extract()?,
        keep_alive_interval: interval.map(|i| seconds(i, "http2 keep_alive_interval")).transpose()?,
        keep_alive_timeout: seconds(required(dict, "keep_alive_timeout")?.extract()?, "http2 keep_alive_timeout")?,
    })
}

fn ws_settings(dict: &Bound<'_, PyDict>) -> PyResult<WsSettings> {
    Ok(WsSettings {
        max_size: required(dict, "max_size")?.extract()?,
        max_queue: required(dict, "max_queue")?.extract()?,
        ping_interval: optional_seconds(dict, "ping_interval")?,
        ping_timeout: optional_seconds(dict, "ping_timeout")?,
        per_message_deflate: required(dict, "per_message_deflate")?.extract()?,
    })
}

fn http3_settings(value: &Bound<'_, PyAny>) -> PyResult<Option<Http3Settings>> {
    if value.is_none() {
        return Ok(None);
    }
    let dict = value.cast::<PyDict>()?;
    let interval: Option<f64> = required(dict, "keep_alive_interval")?.extract()?;
    Ok(Some(Http3Settings {
        idle_timeout: seconds(required(dict, "idle_timeout")?.extract()?, "http3 idle_timeout")?,
        keep_alive_interval: interval.map(|i| seconds(i, "http3 keep_alive_interval")).transpose()?,
        max_concurrent_streams: required(dict, "max_concurrent_streams")?.extract()?,
        stream_receive_window: required(dict, "stream_receive_window")?.extract()?,
        receive_window: required(dict, "receive_window")?.extract()?,
        send_window: required(dict, "send_window")?.extract()?,
        max_udp_payload: required(dict, "max_udp_payload")?.extract()?,
        congestion: match required(dict, "congestion")?.extract::<String>()?.as_str() {
            "cubic" => CongestionControl::Cubic,
            "newreno" => CongestionControl::NewReno,
            "bbr" => CongestionControl::Bbr,
            other => {
                return Err(PyValueError::new_err(format!(
                    "http3 congestion must be cubic, newreno or bbr, not {other:?}"
                )));
            }
        },
        zero_rtt: required(dict, "zero_rtt")?.extract()?,
        worker_tag: required(dict, "worker_tag")?.extract()?,
    }))
}

fn tls_options(value: &Bound<'_, PyAny>) -> PyResult<Option<TlsOptions>> {
    if value.is_none() {
        return Ok(None);
    }
    let dict = value.cast::<PyDict>()?;
    Ok(Some(TlsOptions {
        certfile: required(dict, "certfile")?.extract()?,
        keyfile: required(dict, "keyfile")?.extract()?,
        password: required(dict, "password")?.extract()?,
        ca_certs: required(dict, "ca_certs")?.extract()?,
        cert_reqs: required(dict, "cert_reqs")?.extract()?,
        version: required(dict, "version")?.extract()?,
        ciphers: required(dict, "ciphers")?.extract()?,
    }))
}
