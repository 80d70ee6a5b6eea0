//! One QUIC connection: the handshake, then HTTP/3 requests until the connection closes.
//!
//! The requests of a connection are polled inside the connection's own task (no task per
//! request): when the connection is lost, dropping the task drops every request, which is how
//! the application learns of the disconnect, as with hyper's HTTP/2 streams.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h3::server::RequestResolver;
use quinn::Incoming;

use super::response;
use crate::asgi::service::AsgiService;
use crate::net::{ConnInfo, PeerAddr, TlsInfo};
use crate::runtime;
use crate::server::{ConnectionGuard, ServerState};
use crate::watchdog::ConnActivity;

/// How long a client may take to complete the QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS 1.3 as on the wire: QUIC always uses it (RFC 9001 §4.2).
const TLS_1_3: u16 = 0x0304;

type Resolver = RequestResolver<h3_quinn::Connection, Bytes>;

/// HTTP/3's "no error" code, for closing a connection after a graceful shutdown.
const H3_NO_ERROR: u32 = 0x100;

/// What woke the connection task.
// The event lives on the stack for one step of the loop; boxing the resolver would allocate
// per request.
#[allow(clippy::large_enum_variant)]
enum Event {
    /// A new request stream.
    Request(Resolver),
    /// The server started its graceful shutdown.
    Shutdown,
    /// After GOAWAY, the last request finished.
    Drained,
    /// The client closed the connection, or it was lost.
    Closed,
}

/// Serve one incoming QUIC connection until it closes; `local` is the endpoint's address.
pub(crate) async fn serve(state: Rc<ServerState>, incoming: Incoming, local: SocketAddr, key: usize) {
    let _guard = ConnectionGuard { state: state.clone(), key };
    let local = SocketAddr::new(incoming.local_ip().unwrap_or(local.ip()), local.port());
    let Ok(connecting) = incoming.accept() else { return };
    let zero_rtt = state.settings.http3.as_ref().is_some_and(|h3| h3.zero_rtt);
    // With 0-RTT on, requests in early data are served before the handshake completes (RFC 9001
    // §4.6.1); client certificates are then not known yet.
    let early = if zero_rtt { connecting.into_0rtt() } else { Err(connecting) };
    let connection = match early {
        Ok((connection, _)) => connection,
        // A graceful shutdown does not wait for a handshake: no request is in flight yet.
        Err(connecting) => {
            match runtime::timeout(HANDSHAKE_TIMEOUT, unless_shutting_down(&state, key, connecting)).await {
                Some(Some(Ok(connection))) => connection,
                // A failed or abandoned handshake concerns this client only.
                Some(Some(Err(_)) | None) | None => return,
            }
        }
    };
    let info = conn_info(&connection, local);
    let quic = connection.clone();
    let Ok(mut h3) = h3::server::builder()
        .max_field_section_size(state.settings.http2.max_header_list_size.into())
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    else {
        return;
    };
    // QUIC times idle connections itself (--http3-idle-timeout): no watchdog reads the activity.
    let service = AsgiService::new(state.clone(), Rc::new(info), "https", ConnActivity::new(), Arc::default(), None);
    let mut requests = FuturesUnordered::new();
    let mut shutdown_sent = false;
    loop {
        let event = {
            let mut accept = pin!(h3.accept());
            poll_fn(|cx| {
                while let Poll::Ready(Some(())) = requests.poll_next_unpin(cx) {}
                if shutdown_sent {
                    if requests.is_empty() {
                        return Poll::Ready(Event::Drained);
                    }
                } else if state.is_shutting_down() {
                    return Poll::Ready(Event::Shutdown);
                } else {
                    state.park_connection(key, cx.waker());
                }
                accept.as_mut().poll(cx).map(|accepted| match accepted {
                    Ok(Some(resolver)) => Event::Request(resolver),
                    // GOAWAY exchanged and every request done, or the connection is gone.
                    Ok(None) | Err(_) => Event::Closed,
                })
            })
            .await
        };
        match event {
            Event::Request(resolver) => requests.push(response::serve_request(&service, resolver)),
            // RFC 9114 §5.2: GOAWAY, then the requests already accepted run to their end.
            Event::Shutdown => {
                shutdown_sent = true;
                if h3.shutdown(0).await.is_err() {
                    break;
                }
            }
            Event::Drained => {
                drain(&quic).await;
                break;
            }
            Event::Closed => break,
        }
    }
    // Requests still running when the connection is gone are dropped here: a disconnect.
    drop(requests);
}

/// Wait for `future`, or give up (`None`) when the server's graceful shutdown starts.
async fn unless_shutting_down<F: Future>(state: &ServerState, key: usize, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    poll_fn(|cx| {
        if state.is_shutting_down() {
            return Poll::Ready(None);
        }
        state.park_connection(key, cx.waker());
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Close a connection whose requests are all answered, once the client had time to receive
/// the last responses: closing drops stream data not yet acknowledged (RFC 9000 §10.2), and h3
/// does not tell when the peer acknowledged a stream. A client that closes first ends the wait.
async fn drain(quic: &quinn::Connection) {
    let wait = (quic.rtt() * 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    runtime::timeout(wait, quic.closed()).await;
    quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
}

/// Addresses and TLS session of a QUIC connection, as the scope reports them.
fn conn_info(connection: &quinn::Connection, local: SocketAddr) -> ConnInfo {
    let client_chain = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default();
    ConnInfo {
        server: PeerAddr::Ip(local),
        client: Some(connection.remote_address()),
        tls: Some(TlsInfo { version: Some(TLS_1_3), cipher_suite: None, client_chain }),
    }
}
