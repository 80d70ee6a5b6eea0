//! Starting the application for a WebSocket handshake, and the handshake response.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, Version};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::callables::{WsReceive, WsSend};
use super::deflate::{self, DeflateParams};
use super::socket::socket_task;
use super::state::{Decision, Stage, WsRef, WsState, resolve_closed};
use crate::asgi::app;
use crate::asgi::exchange::Aborted;
use crate::asgi::service::{ResponseBody, simple_response};
use crate::runtime;
use crate::server::ServerState;
use crate::watchdog::ActiveExchange;

/// Start the application for a WebSocket request; the returned future yields the handshake
/// response and, on accept, spawns the socket task.
pub(crate) fn start(
    py: Python<'_>,
    state: &Rc<ServerState>,
    scope: Bound<'_, PyDict>,
    parts: &mut Parts,
) -> PyResult<WsResponseFuture> {
    let settings = &state.settings.ws;
    let ws = WsState::new(settings.max_queue);
    let receive = Py::new(py, WsReceive { ws: ws.clone(), state: state.clone() })?;
    let task_key = state.app_tasks.borrow_mut().insert(py.None());
    let send =
        Py::new(py, WsSend { ws: ws.clone(), state: state.clone(), task_key, finished: false }).inspect_err(|_| {
            state.app_tasks.borrow_mut().remove(task_key);
        })?;
    app::run_task(
        py,
        state,
        task_key,
        (scope.into_any(), receive.into_bound(py).into_any(), send.into_bound(py).into_any()),
    )?;
    let key = parts.headers.get(SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    // The same header over HTTP/1.1 and HTTP/2 (RFC 8441 §5).
    let deflate = settings
        .per_message_deflate
        .then(|| deflate::negotiate(parts.headers.get_all(SEC_WEBSOCKET_EXTENSIONS).iter()))
        .flatten();
    Ok(WsResponseFuture {
        ws,
        state: state.clone(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        key,
        http2: parts.version == Version::HTTP_2,
        deflate,
        active: None,
    })
}

/// Future of the handshake response.
pub(crate) struct WsResponseFuture {
    ws: WsRef,
    state: Rc<ServerState>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    key: Option<Vec<u8>>,
    http2: bool,
    /// The accepted permessage-deflate offer and the response header value for it.
    deflate: Option<(DeflateParams, HeaderValue)>,
    /// Counts the session as in flight on its connection, from the handshake to the close.
    active: Option<ActiveExchange>,
}

impl WsResponseFuture {
    /// Keep the connection's `active` count until the WebSocket closes.
    pub(crate) fn keep_active(mut self, active: ActiveExchange) -> Self {
        self.active = Some(active);
        self
    }

    fn poll_response(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<ResponseBody>, Aborted>> {
        let mut ws = self.ws.borrow_mut();
        let ready = match ws.stage {
            Stage::Connecting => false,
            Stage::Responding => false,
            Stage::Open | Stage::Closed => ws.decision.is_some(),
        };
        if !ready {
            if ws.stage == Stage::Closed {
                return Poll::Ready(Err(Aborted));
            }
            ws.head_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let response = match ws.decision.take() {
            Some(Decision::Accept { subprotocol, headers }) => {
                let mut response = Response::new(ResponseBody::full(None));
                *response.status_mut() = if self.http2 { StatusCode::OK } else { StatusCode::SWITCHING_PROTOCOLS };
                let out = response.headers_mut();
                for (name, value) in &self.state.settings.default_headers {
                    out.append(name.clone(), value.clone());
                }
                if !self.http2 {
                    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
                    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                        self.key.as_deref().unwrap_or_default(),
                    );
                    if let Ok(value) = HeaderValue::from_str(&accept) {
                        out.insert(SEC_WEBSOCKET_ACCEPT, value);
                    }
                }
                if let Some(value) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
                    out.insert(SEC_WEBSOCKET_PROTOCOL, value);
                }
                // An application that answers the extensions itself keeps them its own.
                let deflate = self.deflate.take().filter(|_| !headers.contains_key(SEC_WEBSOCKET_EXTENSIONS));
                out.extend(headers);
                if let Some((_, value)) = &deflate {
                    out.insert(SEC_WEBSOCKET_EXTENSIONS, value.clone());
                }
                if let Some(upgrade) = self.upgrade.take() {
                    let key = self.state.open_connection();
                    let params = deflate.map(|(params, _)| params);
                    let active = self.active.take();
                    let id =
                        runtime::spawn(socket_task(upgrade, self.ws.clone(), self.state.clone(), key, params, active));
                    self.state.set_connection_task(key, id);
                }
                response
            }
            Some(Decision::Reject(status)) => {
                simple_response(&self.state, status, status.canonical_reason().unwrap_or(""))
            }
            Some(Decision::Respond { status, headers }) => {
                let body = ws.denial_body.split().freeze();
                let mut response = Response::new(ResponseBody::full(Some(body)));
                *response.status_mut() = status;
                for (name, value) in &self.state.settings.default_headers {
                    response.headers_mut().append(name.clone(), value.clone());
                }
                response.headers_mut().extend(headers);
                response
            }
            None => return Poll::Ready(Err(Aborted)),
        };
        Poll::Ready(Ok(response))
    }
}

impl Future for WsResponseFuture {
    type Output = Result<Response<ResponseBody>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_response(cx)
    }
}

impl Drop for WsResponseFuture {
    fn drop(&mut self) {
        // Dropped before the socket task took over: the client went away during the handshake.
        if self.upgrade.is_some() {
            let (receive, send) = self.ws.borrow_mut().close(1006, String::new());
            resolve_closed(receive, send, &self.ws);
        }
    }
}
