//! One client connection: the optional TLS handshake, then HTTP/1.1 or HTTP/2 with hyper,
//! told apart by the HTTP/2 preface (`preface`, RFC 9113 §3.3) unless `--http` fixes one.

use std::future::Future;
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::asgi::service::AsgiService;
use crate::length_field_watch::{LengthFieldSeen, LengthFieldWatch};
use crate::net::{ConnInfo, TlsInfo};
use crate::preface::{DetectProtocol, Protocol};
use crate::runtime::io::{LastWrite, Registered, Stream};
use crate::runtime::timer::HyperTimer;
use crate::runtime::{self, LocalExec};
use crate::server::{ConnectionGuard, ServerState};
use crate::settings::{Http2Settings, HttpVersions, Settings};
use crate::watchdog::{ConnActivity, Expired, Limits, Watchdog};

/// The smallest read buffer hyper accepts, hence the smallest HTTP/1.1 request head limit.
const MIN_HEAD_LIMIT: usize = 8192;

/// The protocol stack every connection goes through.
pub(crate) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<LocalExec>,
    versions: HttpVersions,
    tls: Option<TlsAcceptor>,
    limits: Limits,
}

impl Protocols {
    /// Configure hyper (HTTP/1.1 and HTTP/2 knobs) and TLS from the settings.
    ///
    /// hyper's header-read timer is off: the connection's [`Watchdog`] times idle connections and
    /// request heads without a timer per request.
    pub(crate) fn new(settings: &Settings, tls: Option<Arc<ServerConfig>>) -> Self {
        let mut http1 = http1::Builder::new();
        http1.timer(HyperTimer).header_read_timeout(None).auto_date_header(settings.date_header).keep_alive(true);
        if let Some(size) = settings.h1_max_head_size {
            http1.max_buf_size(size.max(MIN_HEAD_LIMIT));
        }
        let http2 = http2_builder(&settings.http2, settings.date_header);
        Self { http1, http2, versions: settings.http, tls: tls.map(TlsAcceptor::from), limits: Limits::new(settings) }
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

fn http2_builder(h2: &Http2Settings, date_header: bool) -> http2::Builder<LocalExec> {
    let mut http2 = http2::Builder::new(LocalExec);
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
        .keep_alive_timeout(h2.keep_alive_timeout)
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT).
        .enable_connect_protocol();
    http2
}

/// Serve one accepted connection until it closes.
pub(crate) async fn serve<S: Stream + 'static>(
    state: Rc<ServerState>,
    stream: Registered<S>,
    info: ConnInfo,
    key: usize,
) {
    let _guard = ConnectionGuard { state: state.clone(), key };
    let activity = ConnActivity::new();
    let watchdog = Watchdog::new(activity.clone(), stream.slot(), stream.as_raw_fd(), state.protocols.limits);
    match state.protocols.tls.clone() {
        None => {
            let last_write = Some(stream.last_write());
            serve_http(&state, stream, Rc::new(info), last_write, key, activity, watchdog).await;
        }
        // Boxed: the TLS states are large, and every cleartext connection's task would keep room for them.
        Some(acceptor) => Box::pin(serve_tls(&state, acceptor, stream, info, key, activity, watchdog)).await,
    }
}

/// The TLS handshake, then HTTP over it.
async fn serve_tls<S: Stream + 'static>(
    state: &Rc<ServerState>,
    acceptor: TlsAcceptor,
    stream: Registered<S>,
    mut info: ConnInfo,
    key: usize,
    activity: Rc<ConnActivity>,
    watchdog: Watchdog,
) {
    let handshake = acceptor.accept(stream);
    let handshake = match state.settings.timeout_tls_handshake {
        Some(limit) => runtime::timeout(limit, handshake).await,
        None => Some(handshake.await),
    };
    let tls = match handshake {
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
    serve_http(state, TokioIo::new(tls), Rc::new(info), None, key, activity, watchdog).await;
}

/// HTTP over `io`; `last_write` is the socket itself when `io` is cleartext.
async fn serve_http<I>(
    state: &Rc<ServerState>,
    io: I,
    info: Rc<ConnInfo>,
    last_write: Option<LastWrite>,
    key: usize,
    activity: Rc<ConnActivity>,
    mut watchdog: Watchdog,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let length_field = Arc::new(LengthFieldSeen::default());
    let scheme = if info.tls.is_some() { "https" } else { "http" };
    let service = AsgiService::new(state.clone(), info, scheme, activity, length_field.clone(), last_write);
    match state.protocols.versions {
        HttpVersions::Http1 => {
            serve_http1(state, key, LengthFieldWatch::new(io, length_field), service, watchdog).await
        }
        HttpVersions::Http2 => serve_http2(state, key, io, service, watchdog).await,
        HttpVersions::Auto => {
            // The pinned detector's scope ends before the connection is served.
            let detected = {
                let detect = pin!(DetectProtocol::new(io));
                drive(state, key, detect, &mut watchdog, |d| d.get_mut().cancel()).await
            };
            // None or an error: the client left, or a shutdown or an idle timeout came first.
            let Some(Ok((protocol, io))) = detected else { return };
            match protocol {
                Protocol::Http1 => {
                    serve_http1(state, key, LengthFieldWatch::new(io, length_field), service, watchdog).await
                }
                Protocol::Http2 => serve_http2(state, key, io, service, watchdog).await,
            }
        }
    }
}

/// HTTP/1.1, with upgrades (WebSockets).
async fn serve_http1<I>(state: &Rc<ServerState>, key: usize, io: I, service: AsgiService, mut watchdog: Watchdog)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Boxed: a new connection's task is then small enough to move cheaply when it is spawned.
    let mut conn = Box::pin(state.protocols.http1.serve_connection(io, service).with_upgrades());
    drive(state, key, conn.as_mut(), &mut watchdog, |conn| conn.graceful_shutdown()).await;
}

/// HTTP/2: upgrades (extended CONNECT, RFC 8441) work per stream, without hyper's upgrade variant.
async fn serve_http2<I>(state: &Rc<ServerState>, key: usize, io: I, service: AsgiService, mut watchdog: Watchdog)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut conn = Box::pin(state.protocols.http2.serve_connection(io, service));
    drive(state, key, conn.as_mut(), &mut watchdog, |conn| conn.graceful_shutdown()).await;
}

/// Poll a connection (a hyper connection, or the detection of its protocol) to its end, starting
/// its graceful shutdown when the server's starts or the connection stayed idle too long:
/// HTTP/1.1 closes when idle, else after the response; HTTP/2 sends GOAWAY and lets the open
/// streams finish (RFC 9113 §6.8). A request head or a send that times out drops the connection
/// at once: then the result is `None`.
///
/// Errors are the client's (reset, malformed request): hyper already answered what it could.
async fn drive<C, T, E>(
    state: &ServerState,
    key: usize,
    mut conn: Pin<&mut C>,
    watchdog: &mut Watchdog,
    shutdown: impl Fn(Pin<&mut C>),
) -> Option<Result<T, E>>
where
    C: Future<Output = Result<T, E>>,
{
    let mut shutdown_sent = false;
    poll_fn(|cx| {
        if !shutdown_sent {
            if state.is_shutting_down() {
                // Read what the client has already sent before shutting down: a request that arrived is then
                // in progress and gets its response, instead of being dropped with the "idle" connection.
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                shutdown(conn.as_mut());
                shutdown_sent = true;
            } else {
                state.park_connection(key, cx.waker());
            }
        }
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            match watchdog.check(cx) {
                None => return Poll::Pending,
                Some(Expired::Head | Expired::Send) => return Poll::Ready(None),
                // Polled again: hyper acts on the shutdown (closes an idle HTTP/1.1 connection).
                Some(Expired::Idle) => {
                    shutdown(conn.as_mut());
                    shutdown_sent = true;
                }
            }
        }
    })
    .await
}
