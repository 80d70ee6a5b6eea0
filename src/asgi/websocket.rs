//! ASGI WebSockets (ASGI WebSocket spec 2.4) over HTTP/1.1 Upgrade (RFC 6455 §4) and HTTP/2
//! extended CONNECT (RFC 8441). Framing is tungstenite's; this module holds the handshake
//! decision, the queues between the socket and the application, and the socket task.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::awaitable::Ready;
use super::exchange::Aborted;
use super::messages::resolve;
use super::service::{ResponseBody, simple_response};
use crate::runtime::{self, timer::Sleep};
use crate::server::{ClientDisconnected, ConnectionGuard, ServerState};

/// Queued outgoing bytes above which `send()` waits for the client to read.
const SEND_HIGH_WATER: usize = 64 * 1024;

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
}

/// Whether the request asks for a WebSocket: an HTTP/1.1 Upgrade (RFC 6455 §4.2.1) or an
/// HTTP/2 extended CONNECT with `:protocol = websocket` (RFC 8441 §4).
pub(crate) fn is_upgrade(parts: &Parts) -> bool {
    match parts.version {
        Version::HTTP_11 => {
            parts.method == Method::GET
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

fn has_token(headers: &HeaderMap, name: &http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
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

/// How the application answered the handshake.
enum Decision {
    Accept { subprotocol: Option<String>, headers: HeaderMap },
    Reject(StatusCode),
    Respond { status: StatusCode, headers: HeaderMap },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Waiting for the application's handshake answer.
    Connecting,
    /// The application is sending a denial response (`websocket.http.response.*`).
    Responding,
    /// Accepted: messages flow.
    Open,
    /// Closed, or refused.
    Closed,
}

/// State shared by the application's callables, the handshake response and the socket task.
pub(crate) struct WsState {
    stage: Stage,
    connect_delivered: bool,
    decision: Option<Decision>,
    denial_body: BytesMut,
    head_waker: Option<Waker>,
    inbox: VecDeque<Message>,
    max_queue: usize,
    /// Close code and reason once the connection ended (for `websocket.disconnect`).
    closed: Option<(u16, String)>,
    receive_waiter: Option<Py<PyAny>>,
    outbox: VecDeque<Message>,
    outbox_bytes: usize,
    send_waiter: Option<Py<PyAny>>,
    /// Close frame the application asked for, not yet sent.
    app_close: Option<(u16, String)>,
    socket_waker: Option<Waker>,
}

type WsRef = Rc<RefCell<WsState>>;

impl WsState {
    fn new(max_queue: usize) -> WsRef {
        Rc::new(RefCell::new(Self {
            stage: Stage::Connecting,
            connect_delivered: false,
            decision: None,
            denial_body: BytesMut::new(),
            head_waker: None,
            inbox: VecDeque::new(),
            max_queue: max_queue.max(1),
            closed: None,
            receive_waiter: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            send_waiter: None,
            app_close: None,
            socket_waker: None,
        }))
    }

    fn decide(&mut self, decision: Decision, stage: Stage) {
        self.decision = Some(decision);
        self.stage = stage;
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
    }

    fn wake_socket(&mut self) {
        if let Some(waker) = self.socket_waker.take() {
            waker.wake();
        }
    }

    /// The next message for `receive()`, if one is available.
    fn next_event(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            return Some(event(py, "websocket.connect", &[]));
        }
        if let Some(message) = self.inbox.pop_front() {
            self.wake_socket();
            return Some(match message {
                Message::Text(text) => {
                    event(py, "websocket.receive", &[("text", PyString::new(py, text.as_str()).into_any())])
                }
                Message::Binary(data) => {
                    event(py, "websocket.receive", &[("bytes", PyBytes::new(py, &data).into_any())])
                }
                _ => return None,
            });
        }
        let (code, reason) = self.closed.clone()?;
        Some(event(
            py,
            "websocket.disconnect",
            &[("code", code.into_pyobject(py).ok()?.into_any()), ("reason", PyString::new(py, &reason).into_any())],
        ))
    }

    /// The connection ended: remember why and wake whoever waits.
    fn close(&mut self, code: u16, reason: String) -> (Option<Py<PyAny>>, Option<Py<PyAny>>) {
        if self.closed.is_none() {
            self.closed = Some((code, reason));
        }
        self.stage = Stage::Closed;
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
        (self.receive_waiter.take(), self.send_waiter.take())
    }
}

fn event(py: Python<'_>, kind: &str, items: &[(&str, Bound<'_, PyAny>)]) -> Py<PyAny> {
    let message = PyDict::new(py);
    let _ = message.set_item(intern!(py, "type"), kind);
    for (key, value) in items {
        let _ = message.set_item(*key, value);
    }
    message.into_any().unbind()
}

/// Hand the next message to a parked `receive()`, and release a parked `send()` if room was made.
fn deliver(ws: &WsRef) {
    let (receive, send) = {
        let mut state = ws.borrow_mut();
        let receive = if state.receive_waiter.is_some() {
            Python::attach(|py| state.next_event(py))
                .and_then(|message| state.receive_waiter.take().map(|f| (f, message)))
        } else {
            None
        };
        let send = if state.outbox_bytes <= SEND_HIGH_WATER || state.stage == Stage::Closed {
            state.send_waiter.take()
        } else {
            None
        };
        (receive, send)
    };
    if receive.is_none() && send.is_none() {
        return;
    }
    Python::attach(|py| {
        if let Some((future, message)) = receive {
            resolve(py, &future, message);
        }
        if let Some(future) = send {
            resolve(py, &future, py.None());
        }
    });
}

/// `receive()` of a WebSocket scope.
#[pyclass(module = "tricorn._tricorn", unsendable)]
pub(crate) struct WsReceive {
    ws: WsRef,
    state: Rc<ServerState>,
}

#[pymethods]
impl WsReceive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut ws = self.ws.borrow_mut();
        if let Some(message) = ws.next_event(py) {
            return Ok(Py::new(py, Ready::new(message))?.into_any());
        }
        let future = self.state.create_future.call0(py)?;
        ws.receive_waiter = Some(future.clone_ref(py));
        Ok(future)
    }
}

/// `send()` of a WebSocket scope, with the hooks reporting how the application ended.
#[pyclass(module = "tricorn._tricorn", unsendable)]
pub(crate) struct WsSend {
    ws: WsRef,
    state: Rc<ServerState>,
    task_key: usize,
    finished: bool,
}

fn get<'py>(message: &Bound<'py, PyAny>, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let dict = message.cast::<PyDict>().map_err(|_| PyTypeError::new_err("ASGI messages must be dicts"))?;
    Ok(dict.get_item(key)?.filter(|v| !v.is_none()))
}

fn headers_from(list: Option<Bound<'_, PyAny>>) -> PyResult<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some(list) = list {
        for pair in list.try_iter()? {
            let pair = pair?;
            let name: Vec<u8> = pair.get_item(0)?.extract()?;
            let value: Vec<u8> = pair.get_item(1)?.extract()?;
            let name = http::header::HeaderName::from_bytes(&name)
                .map_err(|_| PyRuntimeError::new_err("Invalid HTTP header name"))?;
            let value =
                HeaderValue::from_bytes(&value).map_err(|_| PyRuntimeError::new_err("Invalid HTTP header value"))?;
            headers.append(name, value);
        }
    }
    Ok(headers)
}

#[pymethods]
impl WsSend {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let kind: String =
            get(message, intern!(py, "type"))?.ok_or_else(|| PyTypeError::new_err("missing 'type'"))?.extract()?;
        let mut ws = self.ws.borrow_mut();
        let done = || self.state.done.clone_ref(py).into_any();
        match (ws.stage, kind.as_str()) {
            (Stage::Connecting, "websocket.accept") => {
                let subprotocol = get(message, intern!(py, "subprotocol"))?.map(|s| s.extract()).transpose()?;
                let headers = headers_from(get(message, intern!(py, "headers"))?)?;
                ws.decide(Decision::Accept { subprotocol, headers }, Stage::Open);
                Ok(done())
            }
            (Stage::Connecting, "websocket.close") => {
                // ASGI: closing before accepting refuses the handshake with 403.
                ws.decide(Decision::Reject(StatusCode::FORBIDDEN), Stage::Closed);
                Ok(done())
            }
            (Stage::Connecting, "websocket.http.response.start") => {
                let status: u16 = get(message, intern!(py, "status"))?.map(|s| s.extract()).transpose()?.unwrap_or(200);
                let status =
                    StatusCode::from_u16(status).map_err(|_| PyRuntimeError::new_err("invalid HTTP status code"))?;
                let headers = headers_from(get(message, intern!(py, "headers"))?)?;
                ws.decision = Some(Decision::Respond { status, headers });
                ws.stage = Stage::Responding;
                Ok(done())
            }
            (Stage::Connecting, other) => Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'websocket.accept', 'websocket.close', or 'websocket.http.response.start' but got '{other}'."
            ))),
            (Stage::Responding, "websocket.http.response.body") => {
                if let Some(body) = get(message, intern!(py, "body"))? {
                    ws.denial_body.extend_from_slice(body.cast::<PyBytes>()?.as_bytes());
                }
                let more = get(message, intern!(py, "more_body"))?.map(|m| m.is_truthy()).transpose()?.unwrap_or(false);
                if !more {
                    ws.stage = Stage::Closed;
                    if let Some(waker) = ws.head_waker.take() {
                        waker.wake();
                    }
                }
                Ok(done())
            }
            (Stage::Responding, other) => Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'websocket.http.response.body' but got '{other}'."
            ))),
            (Stage::Open, "websocket.send") => {
                let text = get(message, intern!(py, "text"))?;
                let data = get(message, intern!(py, "bytes"))?;
                let outgoing = match (data, text) {
                    (Some(data), _) => Message::Binary(Bytes::copy_from_slice(data.cast::<PyBytes>()?.as_bytes())),
                    (None, Some(text)) => Message::Text(text.cast::<PyString>()?.to_str()?.to_owned().into()),
                    (None, None) => return Err(PyRuntimeError::new_err("websocket.send needs 'bytes' or 'text'")),
                };
                ws.outbox_bytes += outgoing.len();
                ws.outbox.push_back(outgoing);
                ws.wake_socket();
                if ws.outbox_bytes > SEND_HIGH_WATER {
                    let future = self.state.create_future.call0(py)?;
                    ws.send_waiter = Some(future.clone_ref(py));
                    return Ok(future);
                }
                Ok(done())
            }
            (Stage::Open, "websocket.close") => {
                let code: u16 = get(message, intern!(py, "code"))?.map(|c| c.extract()).transpose()?.unwrap_or(1000);
                let reason: String =
                    get(message, intern!(py, "reason"))?.map(|r| r.extract()).transpose()?.unwrap_or_default();
                ws.app_close = Some((code, reason));
                ws.wake_socket();
                Ok(done())
            }
            (Stage::Open, other) => Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'websocket.send' or 'websocket.close', but got '{other}'."
            ))),
            // ASGI 2.4: sending on a closed connection raises an OSError subclass.
            (Stage::Closed, _) => Err(ClientDisconnected::new_err("the WebSocket is closed")),
        }
    }

    /// Called by the task wrapper when the application returned.
    fn app_returned(&mut self, py: Python<'_>) {
        self.finish(py, true);
    }

    /// Called by the task wrapper when the application raised.
    fn app_failed(&mut self, py: Python<'_>, _exc: &Bound<'_, PyAny>) {
        self.finish(py, false);
    }
}

impl WsSend {
    fn finish(&mut self, py: Python<'_>, returned: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.state.tasks.set(self.state.tasks.get().saturating_sub(1));
        drop(self.state.app_tasks.borrow_mut().try_remove(self.task_key));
        let mut ws = self.ws.borrow_mut();
        match ws.stage {
            Stage::Connecting | Stage::Responding => {
                if returned && ws.stage == Stage::Connecting {
                    self.state.log_error(py, "ASGI callable returned without sending handshake.");
                }
                ws.decide(Decision::Reject(StatusCode::INTERNAL_SERVER_ERROR), Stage::Closed);
            }
            Stage::Open if ws.app_close.is_none() => {
                ws.app_close = Some(if returned { (1000, String::new()) } else { (1011, String::new()) });
                ws.wake_socket();
            }
            _ => {}
        }
    }
}

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
    let send = Py::new(py, WsSend { ws: ws.clone(), state: state.clone(), task_key, finished: false })?;
    let task = state.app_runner.call1(py, (scope, receive, send)).and_then(|coroutine| {
        let context = state.fresh_context.as_ref().map(|context| context.bind(py).call0()).transpose()?;
        state.task_spawner.spawn(py, coroutine, context)
    });
    match task {
        Ok(task) => {
            if let Some(slot) = state.app_tasks.borrow_mut().get_mut(task_key) {
                *slot = task;
            }
            state.tasks.set(state.tasks.get() + 1);
        }
        Err(err) => {
            state.app_tasks.borrow_mut().remove(task_key);
            return Err(err);
        }
    }
    let key = parts.headers.get(SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    Ok(WsResponseFuture {
        ws,
        state: state.clone(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        key,
        http2: parts.version == Version::HTTP_2,
    })
}

/// Future of the handshake response.
pub(crate) struct WsResponseFuture {
    ws: WsRef,
    state: Rc<ServerState>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    key: Option<Vec<u8>>,
    http2: bool,
}

impl WsResponseFuture {
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
                let mut response = Response::new(ResponseBody::Full(None));
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
                out.extend(headers);
                if let Some(upgrade) = self.upgrade.take() {
                    let key = self.state.open_connection();
                    let id = runtime::spawn(socket_task(upgrade, self.ws.clone(), self.state.clone(), key));
                    self.state.set_connection_task(key, id);
                }
                response
            }
            Some(Decision::Reject(status)) => {
                simple_response(&self.state, status, status.canonical_reason().unwrap_or(""))
            }
            Some(Decision::Respond { status, headers }) => {
                let body = ws.denial_body.split().freeze();
                let mut response = Response::new(ResponseBody::Full(Some(body)));
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

fn resolve_closed(receive: Option<Py<PyAny>>, send: Option<Py<PyAny>>, ws: &WsRef) {
    if receive.is_none() && send.is_none() {
        return;
    }
    Python::attach(|py| {
        if let Some(future) = receive {
            let message = ws.borrow_mut().next_event(py).unwrap_or_else(|| py.None());
            resolve(py, &future, message);
        }
        if let Some(future) = send {
            resolve(py, &future, py.None());
        }
    });
}

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
        _ => None,
    }
}

/// Drive one accepted WebSocket: the app's outgoing messages, the client's incoming ones,
/// keep-alive pings, and the closing handshake.
async fn socket_task(upgrade: hyper::upgrade::OnUpgrade, ws: WsRef, state: Rc<ServerState>, key: usize) {
    // Counted as an open connection until it closes, so a graceful shutdown waits for it.
    let _guard = ConnectionGuard { state: state.clone(), key };
    let Ok(upgraded) = upgrade.await else {
        let (receive, send) = ws.borrow_mut().close(1006, String::new());
        return resolve_closed(receive, send, &ws);
    };
    let settings = state.settings.ws.clone();
    let config =
        WebSocketConfig::default().max_message_size(Some(settings.max_size)).max_frame_size(Some(settings.max_size));
    let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
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
                    message
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
