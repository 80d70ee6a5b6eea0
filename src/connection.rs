//! One client connection: the optional TLS handshake, then HTTP/1.1 or HTTP/2 with hyper
//! (hyper-util's auto builder: ALPN over TLS, the HTTP/2 preface on cleartext, RFC 9113 §3.3).

use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::asgi::service::AsgiService;
use crate::net::{ConnInfo, TlsInfo};
use crate::runtime::io::{Registered, Stream};
use crate::runtime::timer::HyperTimer;
use crate::runtime::{self, LocalExec};
use crate::server::ServerState;
use crate::settings::{Http2Settings, HttpVersions, Settings};

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol stack every connection goes through.
pub(crate) struct Protocols {
    builder: auto::Builder<LocalExec>,
    tls: Option<TlsAcceptor>,
}

impl Protocols {
    /// Configure hyper (HTTP/1.1 and HTTP/2 knobs) and TLS from the settings.
    pub(crate) fn new(settings: &Settings, tls: Option<Arc<ServerConfig>>) -> Self {
        let mut builder = auto::Builder::new(LocalExec);
        builder
            .http1()
            .timer(HyperTimer)
            .header_read_timeout(settings.timeout_keep_alive)
            .auto_date_header(settings.date_header)
            .keep_alive(true);
        configure_http2(&mut builder, &settings.http2, settings.date_header);
        let builder = match settings.http {
            HttpVersions::Auto => builder,
            HttpVersions::Http1 => builder.http1_only(),
            HttpVersions::Http2 => builder.http2_only(),
        };
        Self { builder, tls: tls.map(TlsAcceptor::from) }
    }

    /// The ALPN protocols to offer over TLS, best first.
    pub(crate) fn alpn(http: HttpVersions) -> &'static [&'static [u8]] {
        match http {
            HttpVersions::Auto => &[b"h2", b"http/1.1"],
            HttpVersions::Http1 => &[b"http/1.1"],
            HttpVersions::Http2 => &[b"h2"],
        }
    }
}

fn configure_http2(builder: &mut auto::Builder<LocalExec>, h2: &Http2Settings, date_header: bool) {
    let mut http2 = builder.http2();
    http2
        .timer(HyperTimer)
        .auto_date_header(date_header)
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window_size)
        .initial_connection_window_size(h2.initial_connection_window_size)
        .adaptive_window(h2.adaptive_window)
        .max_frame_size(h2.max_frame_size)
        .max_header_list_size(h2.max_header_list_size)
        .max_send_buf_size(h2.max_send_buf_size)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .keep_alive_interval(h2.keep_alive_interval)
        .keep_alive_timeout(h2.keep_alive_timeout);
}

/// Forgets the connection when its task ends or is cancelled.
struct ConnGuard {
    state: Rc<ServerState>,
    key: usize,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.forget_connection(self.key);
    }
}

/// Serve one accepted connection until it closes.
pub(crate) async fn serve<S: Stream + 'static>(
    state: Rc<ServerState>,
    stream: Registered<S>,
    mut info: ConnInfo,
    key: usize,
) {
    let _guard = ConnGuard { state: state.clone(), key };
    let Some(acceptor) = state.protocols.tls.clone() else {
        return serve_http(&state, stream, Rc::new(info), "http", key).await;
    };
    let tls = match runtime::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Some(Ok(tls)) => tls,
        // A failed or abandoned handshake concerns this client only.
        Some(Err(_)) | None => return,
    };
    let session = tls.get_ref().1;
    info.tls = Some(TlsInfo {
        version: session.protocol_version().map(u16::from),
        cipher_suite: session.negotiated_cipher_suite().map(|s| u16::from(s.suite())),
        client_chain: session
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default(),
    });
    serve_http(&state, TokioIo::new(tls), Rc::new(info), "https", key).await;
}

async fn serve_http<I>(state: &Rc<ServerState>, io: I, info: Rc<ConnInfo>, scheme: &'static str, key: usize)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let service = AsgiService::new(state.clone(), info, scheme);
    let mut conn = pin!(state.protocols.builder.serve_connection(io, service));
    let mut shutdown_sent = false;
    // Errors are the client's (reset, malformed request): hyper already answered what it could.
    let _ = poll_fn(|cx| {
        if !shutdown_sent {
            if state.is_shutting_down() {
                // HTTP/1.1: close when idle, else after the response; HTTP/2: GOAWAY, then
                // let the open streams finish (RFC 9113 §6.8).
                conn.as_mut().graceful_shutdown();
                shutdown_sent = true;
            } else {
                state.park_connection(key, cx.waker());
            }
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
}
