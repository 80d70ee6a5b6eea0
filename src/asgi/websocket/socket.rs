//! The task that drives one accepted WebSocket.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::deflate::{Compressor, DeflateParams, Inflating, is_corrupt};
use super::state::{WsRef, deliver, resolve_closed};
use crate::runtime::timer::Sleep;
use crate::server::{ConnectionGuard, ServerState};
use crate::watchdog::ActiveExchange;

/// The close code for a read error (RFC 6455 §7.4.1).
fn close_code(error: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        // The peer vanished without a closing handshake: nothing to send, 1006 (RFC 6455 §7.1.5).
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        E::Protocol(_) => Some(1002),
        E::Utf8(_) => Some(1007),
        E::Capacity(_) => Some(1009),
        E::Io(error) if is_corrupt(error) => Some(1002),
        _ => None,
    }
}

/// Drive one accepted WebSocket: the app's outgoing messages, the client's incoming ones,
/// keep-alive pings, and the closing handshake; `deflate` is the negotiated permessage-deflate.
pub(super) async fn socket_task(
    upgrade: hyper::upgrade::OnUpgrade,
    ws: WsRef,
    state: Rc<ServerState>,
    key: usize,
    deflate: Option<DeflateParams>,
    active: Option<ActiveExchange>,
) {
    // Counted as an open connection until it closes, so a graceful shutdown waits for it; and
    // as an exchange in flight on its HTTP/2 connection, so that one is not closed as idle.
    let _guard = ConnectionGuard { state: state.clone(), key };
    let _active = active;
    let Ok(upgraded) = upgrade.await else {
        let (receive, send) = ws.borrow_mut().close(1006, String::new());
        return resolve_closed(receive, send, &ws);
    };
    let settings = state.settings.ws.clone();
    let config =
        WebSocketConfig::default().max_message_size(Some(settings.max_size)).max_frame_size(Some(settings.max_size));
    let stream = Inflating::new(TokioIo::new(upgraded), deflate.as_ref());
    let mut compressor = deflate.as_ref().map(Compressor::new);
    let mut socket = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let mut ping_due = settings.ping_interval.map(|i| Box::pin(Sleep::until(Instant::now() + i)));
    let mut pong_deadline: Option<Pin<Box<Sleep>>> = None;
    let mut close_sent = false;
    let outcome = poll_fn(|cx| {
        state.park_connection(key, cx.waker());
        let mut socket = Pin::new(&mut socket);
        // Server shutdown: 1012 (Service Restart), as uvicorn.
        if state.is_shutting_down() && !close_sent {
            ws.borrow_mut().app_close.get_or_insert((1012, String::new()));
        }
        // Outgoing: the app's messages, then its close request.
        loop {
            let next = {
                let mut w = ws.borrow_mut();
                if w.outbox.is_empty() {
                    w.app_close.take().map(|(code, reason)| (None, Some((code, reason))))
                } else {
                    Some((w.outbox.pop_front(), None))
                }
            };
            let Some((message, close)) = next else { break };
            // One message at a time into tungstenite: the next only once the previous reached the
            // socket, so a client that does not read makes `send()` wait (backpressure).
            match socket.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(1006),
                Poll::Pending => {
                    let mut w = ws.borrow_mut();
                    match (message, close) {
                        (Some(message), _) => w.outbox.push_front(message),
                        (None, close) => w.app_close = close,
                    }
                    break;
                }
            }
            let frame = match (message, close) {
                (Some(message), _) => {
                    ws.borrow_mut().outbox_bytes -= message.len();
                    match compressor.as_mut() {
                        Some(compressor) => compressor.encode(message),
                        None => message,
                    }
                }
                (None, Some((code, reason))) => {
                    close_sent = true;
                    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
                }
                (None, None) => break,
            };
            if socket.as_mut().start_send(frame).is_err() {
                return Poll::Ready(1006);
            }
        }
        if let Poll::Ready(Err(_)) = socket.as_mut().poll_flush(cx) {
            return Poll::Ready(1006);
        }
        deliver(&ws);
        // Keep-alive.
        if let Some(due) = ping_due.as_mut()
            && due.as_mut().poll(cx).is_ready()
        {
            let _ = socket.as_mut().start_send(Message::Ping(Bytes::new()));
            let _ = socket.as_mut().poll_flush(cx);
            let interval = settings.ping_interval.unwrap_or(Duration::from_secs(20));
            *due = Box::pin(Sleep::until(Instant::now() + interval));
            let _ = due.as_mut().poll(cx);
            if let Some(timeout) = settings.ping_timeout
                && pong_deadline.is_none()
            {
                let mut deadline = Box::pin(Sleep::until(Instant::now() + timeout));
                let _ = deadline.as_mut().poll(cx);
                pong_deadline = Some(deadline);
            }
        }
        if let Some(deadline) = pong_deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let frame = CloseFrame { code: CloseCode::from(1011), reason: "keepalive ping timeout".into() };
            let _ = socket.as_mut().start_send(Message::Close(Some(frame)));
            let _ = socket.as_mut().poll_flush(cx);
            return Poll::Ready(1011);
        }
        // Incoming, while the app keeps up.
        loop {
            if ws.borrow().inbox.len() >= ws.borrow().max_queue {
                break;
            }
            match socket.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(1006),
                Poll::Ready(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                    ws.borrow_mut().inbox.push_back(message);
                    deliver(&ws);
                }
                Poll::Ready(Some(Ok(Message::Pong(_)))) => pong_deadline = None,
                Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                    // tungstenite queues the reply; flush it, then report the client's code.
                    let _ = socket.as_mut().poll_flush(cx);
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    ws.borrow_mut().closed = Some((code, reason));
                    return Poll::Ready(code);
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(error))) => {
                    if let Some(code) = close_code(&error) {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                        let _ = socket.as_mut().start_send(Message::Close(Some(frame)));
                        let _ = socket.as_mut().poll_flush(cx);
                        return Poll::Ready(code);
                    }
                    return Poll::Ready(1006);
                }
            }
        }
        ws.borrow_mut().socket_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    let (receive, send) = {
        let mut w = ws.borrow_mut();
        let reason = w.closed.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
        w.close(outcome, reason)
    };
    resolve_closed(receive, send, &ws);
}
