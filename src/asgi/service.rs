//! The network side of an exchange: the service that starts the application for each request,
//! the future that yields the response head, and the body that streams what `send()` queued.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALT_SVC, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pyo3::prelude::*;

use super::body::RequestBody;
use super::exchange::{Aborted, Exchange, ExchangeRef, Parked, ResponseHead};
use super::scope::ConnScope;
use super::{app, messages, websocket};
use crate::net::ConnInfo;
use crate::server::ServerState;

/// hyper service: one per connection.
pub(crate) struct AsgiService {
    pub(crate) state: Rc<ServerState>,
    pub(crate) conn: Rc<ConnInfo>,
    /// Scheme of the connection before proxy headers (`http` or `https`).
    pub(crate) scheme: &'static str,
    /// Scope values that stay the same for every request of the connection.
    pub(crate) conn_scope: RefCell<ConnScope>,
}

impl AsgiService {
    /// The service of one connection.
    pub(crate) fn new(state: Rc<ServerState>, conn: Rc<ConnInfo>, scheme: &'static str) -> Self {
        Self { state, conn, scheme, conn_scope: RefCell::default() }
    }
}

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<ResponseBody>;
    type Error = Aborted;
    type Future = TcpResponseFuture;

    fn call(&self, request: Request<Incoming>) -> TcpResponseFuture {
        TcpResponseFuture {
            inner: self.handle(request.map(RequestBody::Hyper)),
            alt_svc: self.state.alt_svc.borrow().clone(),
        }
    }
}

impl AsgiService {
    /// Start the exchange of one request, whatever HTTP version carried it.
    pub(crate) fn handle(&self, request: Request<RequestBody>) -> ResponseFuture {
        let state = &self.state;
        state.total_requests.set(state.total_requests.get() + 1);
        if let Some(limit) = state.settings.limit_concurrency {
            // uvicorn's rule, kept as is: 503 once open connections (this one included, idle
            // keep-alive ones too) or running tasks reach the limit.
            if state.connections.get() >= limit || state.tasks.get() >= limit {
                state.log_warning("Exceeded concurrency limit.");
                return ResponseFuture::Simple(Some(simple_response(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable",
                )));
            }
        }
        if let Some(limit) = state.settings.limit_request_body
            && request
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > limit)
        {
            return ResponseFuture::Simple(Some(simple_response(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
            )));
        }
        let (mut parts, body) = request.into_parts();
        if state.settings.ws_enabled && websocket::is_upgrade(&parts) {
            let started = Python::attach(|py| {
                let mut conn_scope = self.conn_scope.borrow_mut();
                app::start_websocket(py, state, &self.conn, &mut conn_scope, self.scheme, &mut parts)
            });
            return match started {
                Ok(future) => ResponseFuture::WebSocket(future),
                Err(err) => {
                    Python::attach(|py| state.log_exception(py, "Exception in ASGI application\n", &err));
                    ResponseFuture::Simple(Some(simple_response(
                        state,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                    )))
                }
            };
        }
        // hyper drops the content of a HEAD response only on HTTP/1.1.
        let discard_body = parts.method == Method::HEAD && parts.version != Version::HTTP_11;
        let exchange = Exchange::new(body, state.settings.limit_request_body, discard_body);
        let started = Python::attach(|py| {
            let mut conn_scope = self.conn_scope.borrow_mut();
            app::start(py, state, &self.conn, &mut conn_scope, self.scheme, &parts, &exchange)
        });
        match started {
            Ok(()) => ResponseFuture::App { exchange, state: state.clone(), done: Cell::new(false) },
            Err(err) => {
                Python::attach(|py| state.log_exception(py, "Exception in ASGI application\n", &err));
                ResponseFuture::Simple(Some(simple_response(
                    state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                )))
            }
        }
    }
}

/// A complete response produced by the server itself (errors, overload).
pub(crate) fn simple_response(state: &ServerState, status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &state.settings.default_headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Future of the response head on HTTP/1.1 and HTTP/2, where the `alt-svc` header announces
/// HTTP/3 (RFC 7838 §3) when it is on.
pub(crate) struct TcpResponseFuture {
    inner: ResponseFuture,
    alt_svc: Option<HeaderValue>,
}

impl Future for TcpResponseFuture {
    type Output = Result<Response<ResponseBody>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut response = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        if let (Ok(response), Some(alt_svc)) = (&mut response, this.alt_svc.take()) {
            response.headers_mut().entry(ALT_SVC).or_insert(alt_svc);
        }
        Poll::Ready(response)
    }
}

/// Future of the response head.
pub(crate) enum ResponseFuture {
    /// A response the server made itself.
    Simple(Option<Response<ResponseBody>>),
    /// A WebSocket handshake waiting for the application.
    WebSocket(websocket::WsResponseFuture),
    /// Waiting for the application.
    App { exchange: ExchangeRef, state: Rc<ServerState>, done: Cell<bool> },
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Simple(response) => Poll::Ready(response.take().ok_or(Aborted)),
            Self::WebSocket(future) => Pin::new(future).poll(cx),
            Self::App { exchange, state, done } => {
                let head = match exchange.borrow_mut().poll_head(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(head) => head,
                };
                done.set(true);
                match head {
                    Some(ResponseHead { status, headers }) => {
                        let body = if exchange.borrow().discard_body {
                            ResponseBody::Head(exchange.clone(), exchange.borrow().sent_length)
                        } else {
                            ResponseBody::Stream(exchange.clone(), false)
                        };
                        let mut response = Response::new(body);
                        *response.status_mut() = status;
                        *response.headers_mut() = headers;
                        Poll::Ready(Ok(response))
                    }
                    // The application finished without a response, or failed before starting one.
                    None if exchange.borrow().disconnected => Poll::Ready(Err(Aborted)),
                    None => {
                        log_access(exchange);
                        Poll::Ready(Ok(simple_response(
                            state,
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "Internal Server Error",
                        )))
                    }
                }
            }
        }
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Self::App { exchange, done, .. } = self
            && !done.get()
        {
            // hyper dropped the request before a response: the connection is gone.
            let parked = exchange.borrow_mut().mark_disconnected();
            resolve_parked(exchange, parked);
        }
    }
}

/// Response body handed to hyper.
pub(crate) enum ResponseBody {
    /// A body known in full.
    Full(Option<Bytes>),
    /// Chunks sent by the application; the flag records that the end was reached.
    Stream(ExchangeRef, bool),
    /// No content, for a HEAD request, with the length a GET would have had.
    Head(ExchangeRef, u64),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Head(..) => Poll::Ready(None),
            Self::Stream(exchange, finished) => {
                let (poll, drained) = exchange.borrow_mut().poll_chunk(cx);
                if let Some(future) = drained {
                    Python::attach(|py| messages::resolve(py, &future, py.None()));
                }
                if let Poll::Ready(None) = poll {
                    *finished = true;
                    let waiter = exchange.borrow_mut().mark_sent();
                    if let Some(future) = waiter {
                        Python::attach(|py| messages::resolve(py, &future, messages::disconnect(py)));
                    }
                }
                poll
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Head(..) => true,
            Self::Stream(exchange, finished) => *finished || exchange.borrow().body_is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Head(_, length) => SizeHint::with_exact(*length),
            Self::Stream(exchange, _) => {
                exchange.borrow().known_length().map_or_else(SizeHint::default, SizeHint::with_exact)
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Self::Stream(exchange, _) | Self::Head(exchange, _) = self {
            log_access(exchange);
        }
        if let Self::Stream(exchange, false) = self {
            let parked = exchange.borrow_mut().mark_disconnected();
            resolve_parked(exchange, parked);
        }
        if let Self::Stream(exchange, _) = self
            && let Some(pump) = exchange.borrow_mut().take_pump()
        {
            crate::runtime::with_current(|rt| rt.executor.cancel(pump));
        }
    }
}

/// Write the `--access-log-format` line of an exchange that is over, if it has one.
fn log_access(exchange: &ExchangeRef) {
    let record = exchange.borrow_mut().take_access_record();
    if let Some((record, bytes)) = record {
        record.log(bytes);
    }
}

/// Wake the application's pending `receive()` and `send()` after the connection went away.
fn resolve_parked(_exchange: &ExchangeRef, parked: Parked) {
    if parked.receive.is_none() && parked.send.is_none() {
        return;
    }
    Python::attach(|py| {
        if let Some(future) = parked.receive {
            messages::resolve(py, &future, messages::disconnect(py));
        }
        if let Some(future) = parked.send {
            messages::resolve(py, &future, py.None());
        }
    });
}
