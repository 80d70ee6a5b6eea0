//! The network side of an exchange: the service that starts the application for each request,
//! the future that yields the response head, and the body that streams what `send()` queued.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
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
use crate::last_response::{self, Ending};
use crate::length_field_watch::LengthFieldSeen;
use crate::net::ConnInfo;
use crate::request_checks;
use crate::request_fields::FieldsPresent;
use crate::runtime::io::LastWrite;
use crate::server::ServerState;
use crate::watchdog::{ActiveExchange, ConnActivity};

/// hyper service: one per connection.
pub(crate) struct AsgiService {
    pub(crate) state: Rc<ServerState>,
    pub(crate) conn: Rc<ConnInfo>,
    /// Scheme of the connection before proxy headers (`http` or `https`).
    pub(crate) scheme: &'static str,
    /// Scope values that stay the same for every request of the connection.
    pub(crate) conn_scope: Rc<RefCell<ConnScope>>,
    /// Exchanges in flight, for the connection's watchdog.
    activity: Rc<ConnActivity>,
    /// Whether an HTTP/1.1 request head held `Content-Length` that hyper dropped for
    /// `Transfer-Encoding`.
    length_field: Arc<LengthFieldSeen>,
    /// The socket of a cleartext connection, told when a response is the connection's last.
    last_write: Option<LastWrite>,
}

impl AsgiService {
    /// The service of one connection.
    pub(crate) fn new(
        state: Rc<ServerState>,
        conn: Rc<ConnInfo>,
        scheme: &'static str,
        activity: Rc<ConnActivity>,
        length_field: Arc<LengthFieldSeen>,
        last_write: Option<LastWrite>,
    ) -> Self {
        Self { state, conn, scheme, conn_scope: Rc::default(), activity, length_field, last_write }
    }

    /// A response made by the server, closing the connection.
    fn reject(&self, status: StatusCode, active: ActiveExchange) -> ResponseFuture {
        ResponseFuture::new(rejection(&self.state, status), Some(active))
    }
}

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<ResponseBody>;
    type Error = Aborted;
    type Future = TcpResponseFuture;

    fn call(&self, request: Request<Incoming>) -> TcpResponseFuture {
        let fields = FieldsPresent::of(request.headers());
        // hyper answers CONNECT's 2xx without a body and hands the connection over.
        let ending = match &self.last_write {
            Some(socket) if request.version() <= Version::HTTP_11 && request.method() != Method::CONNECT => {
                Some(EndingCheck {
                    socket: socket.clone(),
                    request_closes: last_response::request_closes(request.version(), request.headers(), fields),
                    head: request.method() == Method::HEAD,
                })
            }
            _ => None,
        };
        TcpResponseFuture {
            inner: self.handle(request.map(RequestBody::Hyper), fields),
            alt_svc: self.state.alt_svc.borrow().clone(),
            ending,
        }
    }
}

impl AsgiService {
    /// Start the exchange of one request, whatever HTTP version carried it; `fields`: those of
    /// its fields the server acts on.
    pub(crate) fn handle(&self, request: Request<RequestBody>, fields: FieldsPresent) -> ResponseFuture {
        let state = &self.state;
        state.total_requests.set(state.total_requests.get() + 1);
        let multiplexed = matches!(request.version(), Version::HTTP_2 | Version::HTTP_3);
        let active = self.activity.begin(multiplexed);
        if let Some(limit) = state.settings.limit_concurrency {
            // uvicorn's rule, kept as is: 503 once open connections (this one included, idle
            // keep-alive ones too) or running tasks reach the limit.
            if state.connections.get() >= limit || state.tasks.get() >= limit {
                state.log_warning("Exceeded concurrency limit.");
                return self.reject(StatusCode::SERVICE_UNAVAILABLE, active);
            }
        }
        let (mut parts, body) = request.into_parts();
        if !multiplexed {
            let had_length = self.length_field.take();
            if let Err(status) = request_checks::check_http1(&parts, fields, had_length) {
                return self.reject(status, active);
            }
        }
        if let Some(limit) = state.settings.limit_request_body
            && parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > limit)
        {
            return self.reject(StatusCode::PAYLOAD_TOO_LARGE, active);
        }
        if state.settings.ws_enabled && websocket::is_upgrade(&parts, fields) {
            let started = Python::attach(|py| {
                let mut conn_scope = self.conn_scope.borrow_mut();
                app::start_websocket(py, state, &self.conn, &mut conn_scope, self.scheme, fields, &mut parts)
            });
            return match started {
                // The session counts as in flight until the WebSocket closes.
                Ok(future) => ResponseFuture::new(Pending::WebSocket(Box::new(future.keep_active(active))), None),
                Err(err) => {
                    Python::attach(|py| state.log_exception(py, "Exception in ASGI application\n", &err));
                    self.reject(StatusCode::INTERNAL_SERVER_ERROR, active)
                }
            };
        }
        // hyper drops the content of a HEAD response only on HTTP/1.x (RFC 9110 §9.3.2).
        let discard_body = parts.method == Method::HEAD && multiplexed;
        let exchange = Exchange::new(body, &state.settings, discard_body);
        // With --limit-concurrency the start stays here, where the running tasks are counted.
        if parts.version == Version::HTTP_2 && state.settings.limit_concurrency.is_none() {
            // hyper accepts every stream of a read at once; started here, each batch's scopes
            // and tasks would all be alive before the loop steps any of them. In the stream's
            // own task, the executor's budget per pass lets the loop run them a group at a time.
            let start = AppStart {
                state: state.clone(),
                conn: self.conn.clone(),
                conn_scope: self.conn_scope.clone(),
                scheme: self.scheme,
                fields,
                parts,
                exchange,
            };
            return ResponseFuture::new(Pending::Deferred(Some(Box::new(start))), Some(active));
        }
        let pending = start_app(state, &self.conn, &self.conn_scope, self.scheme, fields, &parts, exchange);
        ResponseFuture::new(pending, Some(active))
    }
}

/// Start the application for a request; what the response then waits for (a 500 if it could
/// not start).
fn start_app(
    state: &Rc<ServerState>,
    conn: &ConnInfo,
    conn_scope: &RefCell<ConnScope>,
    scheme: &'static str,
    fields: FieldsPresent,
    parts: &http::request::Parts,
    exchange: ExchangeRef,
) -> Pending {
    let origin = app::request_origin(&state.settings, conn, scheme, &parts.headers, fields);
    let started = Python::attach(|py| {
        let mut conn_scope = conn_scope.borrow_mut();
        app::start(py, state, conn, &mut conn_scope, &origin, parts, &exchange)
    });
    match started {
        Ok(()) => Pending::App { exchange, state: state.clone(), done: Cell::new(false), first_poll: true },
        Err(err) => {
            Python::attach(|py| state.log_exception(py, "Exception in ASGI application\n", &err));
            rejection(state, StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// An HTTP/2 request's application, to start when the stream's task is first polled.
struct AppStart {
    state: Rc<ServerState>,
    conn: Rc<ConnInfo>,
    conn_scope: Rc<RefCell<ConnScope>>,
    scheme: &'static str,
    fields: FieldsPresent,
    parts: http::request::Parts,
    exchange: ExchangeRef,
}

impl AppStart {
    fn run(self) -> Pending {
        start_app(&self.state, &self.conn, &self.conn_scope, self.scheme, self.fields, &self.parts, self.exchange)
    }
}

/// A response the server makes itself with `status`, closing the connection.
fn rejection(state: &ServerState, status: StatusCode) -> Pending {
    let text = status.canonical_reason().unwrap_or("");
    Pending::Simple(Some(Box::new(simple_response(state, status, text))))
}

/// A complete response produced by the server itself (errors, overload).
pub(crate) fn simple_response(state: &ServerState, status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Some(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &state.settings.default_headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response.body_mut().closes = true;
    response
}

/// Future of the response head on HTTP/1.1 and HTTP/2, where the `alt-svc` header announces
/// HTTP/3 (RFC 7838 §3) when it is on.
pub(crate) struct TcpResponseFuture {
    inner: ResponseFuture,
    alt_svc: Option<HeaderValue>,
    /// On a cleartext HTTP/1.x connection: what tells whether the response ends it.
    ending: Option<EndingCheck>,
}

/// What tells the socket of a cleartext HTTP/1.x connection when its last response is all in
/// hyper's hands (see `LastWrite`).
struct EndingCheck {
    socket: LastWrite,
    /// The request asked to close the connection after the response.
    request_closes: bool,
    /// The request's method is HEAD.
    head: bool,
}

impl EndingCheck {
    /// Tell the socket now, or hand it to the body to tell at its end, if `response` is the last.
    fn apply(self, response: &mut Response<ResponseBody>) {
        let response_closes = response.body().closes;
        match last_response::ending(self.request_closes, response_closes, self.head, response.status()) {
            Ending::No => response.body_mut().socket = Some(self.socket),
            Ending::AtHead => self.socket.mark(),
            Ending::AtBodyEnd => {
                let body = response.body_mut();
                body.socket = Some(self.socket);
                body.ends_connection = true;
            }
        }
    }
}

impl Future for TcpResponseFuture {
    type Output = Result<Response<ResponseBody>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut response = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        if let Ok(response) = &mut response {
            if let Some(alt_svc) = this.alt_svc.take() {
                response.headers_mut().entry(ALT_SVC).or_insert(alt_svc);
            }
            if let Some(ending) = this.ending.take() {
                ending.apply(response);
            }
        }
        Poll::Ready(response)
    }
}

/// Future of the response head.
pub(crate) struct ResponseFuture {
    pending: Pending,
    /// Counts the exchange as in flight; handed on to the response body.
    active: Option<ActiveExchange>,
}

/// What the response head waits for. The rare variants are boxed: hyper keeps the future of
/// every request in flight, and moves it when the request starts.
enum Pending {
    /// A response the server made itself.
    Simple(Option<Box<Response<ResponseBody>>>),
    /// A WebSocket handshake waiting for the application.
    WebSocket(Box<websocket::WsResponseFuture>),
    /// Waiting for the application.
    App {
        exchange: ExchangeRef,
        state: Rc<ServerState>,
        done: Cell<bool>,
        /// Not polled yet: see `ResponseFuture::poll`.
        first_poll: bool,
    },
    /// An HTTP/2 request whose application starts when the stream's task is first polled.
    Deferred(Option<Box<AppStart>>),
}

impl ResponseFuture {
    fn new(pending: Pending, active: Option<ActiveExchange>) -> Self {
        Self { pending, active }
    }

    /// The next `http.response.early_hint` of the application, to send as a 103 before the head.
    pub(crate) fn take_early_hint(&self) -> Option<http::HeaderMap> {
        match &self.pending {
            Pending::App { exchange, .. } => exchange.borrow_mut().take_early_hint(),
            _ => None,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Pending::Deferred(start) = &mut this.pending {
            this.pending = start.take().ok_or(Aborted)?.run();
        }
        if let Pending::App { exchange, first_poll, .. } = &mut this.pending
            && std::mem::take(first_poll)
            && exchange.borrow().head_settled()
        {
            // The application answered within its first step, run eagerly as the task was
            // created (Python 3.12+). Written right away, each response of a batch would go out
            // alone and wake the client alone; yielding once puts the write after the rest of
            // the batch, as happens when the loop steps the tasks.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut poll = match &mut this.pending {
            Pending::Deferred(_) => Poll::Ready(Err(Aborted)),
            Pending::Simple(response) => Poll::Ready(response.take().map(|response| *response).ok_or(Aborted)),
            Pending::WebSocket(future) => Pin::new(&mut **future).poll(cx),
            Pending::App { exchange, state, done, .. } => poll_app(exchange, state, done, cx),
        };
        if let Poll::Ready(Ok(response)) = &mut poll {
            response.body_mut().active = this.active.take();
        }
        poll
    }
}

/// The response head once the application sent it (or failed, or the server rejected the request).
fn poll_app(
    exchange: &ExchangeRef,
    state: &ServerState,
    done: &Cell<bool>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResponseBody>, Aborted>> {
    let head = match exchange.borrow_mut().poll_head(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(head) => head,
    };
    done.set(true);
    let rejection = exchange.borrow().rejection;
    Poll::Ready(match head {
        Some(ResponseHead { status, headers, closes }) => {
            let body = if exchange.borrow().discard_body {
                BodyKind::Head(exchange.clone(), exchange.borrow().sent_length)
            } else {
                BodyKind::Stream(exchange.clone(), false)
            };
            let mut response = Response::new(ResponseBody::new(body));
            response.body_mut().closes = closes;
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
        // The server ended the request (body too large, malformed or stalled) before a response.
        None if rejection.is_some() => {
            let status = rejection.unwrap_or(StatusCode::BAD_REQUEST);
            Ok(simple_response(state, status, status.canonical_reason().unwrap_or("")))
        }
        // The application finished without a response, or failed before starting one.
        None if exchange.borrow().disconnected => Err(Aborted),
        None => {
            log_access(exchange);
            Ok(simple_response(state, StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"))
        }
    })
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Pending::App { exchange, done, .. } = &self.pending
            && !done.get()
        {
            // hyper dropped the request before a response: the connection is gone.
            let parked = exchange.borrow_mut().mark_disconnected();
            resolve_parked(parked);
        }
    }
}

/// Response body handed to hyper.
pub(crate) struct ResponseBody {
    kind: BodyKind,
    /// Counts the exchange as in flight until hyper has taken the whole body.
    active: Option<ActiveExchange>,
    /// The connection's socket, on cleartext HTTP/1.x: told when a large chunk has more of the
    /// body after it (see [`HOLD_TAIL`]), and when hyper has the body's end if this response is
    /// the connection's last.
    socket: Option<LastWrite>,
    /// This response is the connection's last.
    ends_connection: bool,
    /// The response's fields end the connection (`Connection: close`).
    closes: bool,
    /// The last frame was a large chunk: the next poll lets hyper write it first.
    write_first: bool,
}

/// A response chunk at least this large is handed to the socket before hyper takes the next one.
///
/// hyper otherwise gathers every chunk the application has queued (up to its buffer limit, about
/// 400 KiB) into one `writev`. On a host whose TCP congestion control paces each socket itself
/// (BBR without the `fq` queueing discipline), a burst of several 64 KiB segments is spread out
/// with a timer per segment, which on a virtual machine exits to the hypervisor: writing large
/// chunks one at a time, as they come, took 3.5–11 % off the CPU time of a streamed 1 MiB
/// response (docs/performance.md, "TCP pacing"). Smaller chunks are gathered as before.
const WRITE_ALONE: usize = 16 * 1024;

/// A written-alone chunk of a size in this range, with more of the body after it, goes out with
/// `MSG_MORE`: the kernel sends its full segments and keeps the short rest (a 64 KiB chunk with
/// its chunked framing is a full loopback segment and 64 bytes) for the next write to carry, or
/// until the segments before it are acknowledged, as with `TCP_NODELAY` an acknowledgement
/// pushes it, instead of sending it as a segment of its own. A chunk of 64 KiB fills a segment
/// whatever the MSS, so that acknowledgement always comes. On a streamed 1 MiB response in 64 KiB
/// chunks it took 10 % off the server's CPU time a request; on a 10 MB file sent in 256 KiB
/// chunks (`http.response.pathsend`), where the tail is one segment in five rather than one in
/// two, it added 20 % for a reason not yet found, hence the upper bound (docs/performance.md,
/// "TCP pacing").
const HOLD_TAIL: std::ops::Range<usize> = 64 * 1024..128 * 1024;

/// Where the response body comes from.
enum BodyKind {
    /// A body known in full.
    Full(Option<Bytes>),
    /// Chunks sent by the application; the flag records that the end was reached.
    Stream(ExchangeRef, bool),
    /// No content, for a HEAD request, with the length a GET would have had.
    Head(ExchangeRef, u64),
}

impl ResponseBody {
    fn new(kind: BodyKind) -> Self {
        Self { kind, active: None, socket: None, ends_connection: false, closes: false, write_first: false }
    }

    /// hyper has (or is about to write) the body's end.
    fn ended(&self) {
        if self.ends_connection
            && let Some(socket) = &self.socket
        {
            socket.mark();
        }
    }

    /// The next frame of the body, wherever it comes from.
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match &mut self.kind {
            BodyKind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Head(..) => Poll::Ready(None),
            BodyKind::Stream(exchange, finished) => {
                if std::mem::take(&mut self.write_first) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let (poll, drained) = exchange.borrow_mut().poll_chunk(cx);
                if let Poll::Ready(Some(Ok(frame))) = &poll
                    && let Some(data) = frame.data_ref()
                    && data.len() >= WRITE_ALONE
                {
                    self.write_first = true;
                    if HOLD_TAIL.contains(&data.len())
                        && !exchange.borrow().body_is_end()
                        && let Some(socket) = &self.socket
                    {
                        socket.hold_tail();
                    }
                }
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

    /// A body known in full (`None`: empty).
    pub(crate) fn full(data: Option<Bytes>) -> Self {
        Self::new(BodyKind::Full(data))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        let poll = this.poll_kind(cx);
        // Trailers end a body; `is_end_stream` tells of the other ends.
        if matches!(&poll, Poll::Ready(None)) || matches!(&poll, Poll::Ready(Some(Ok(frame))) if frame.is_trailers()) {
            this.ended();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        let end = match &self.kind {
            BodyKind::Full(data) => data.is_none(),
            BodyKind::Head(..) => true,
            BodyKind::Stream(exchange, finished) => *finished || exchange.borrow().body_is_end(),
        };
        if end {
            self.ended();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            BodyKind::Full(None) => SizeHint::with_exact(0),
            BodyKind::Head(_, length) => SizeHint::with_exact(*length),
            BodyKind::Stream(exchange, _) => {
                exchange.borrow().known_length().map_or_else(SizeHint::default, SizeHint::with_exact)
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let BodyKind::Stream(exchange, _) | BodyKind::Head(exchange, _) = &self.kind {
            log_access(exchange);
        }
        if let BodyKind::Stream(exchange, finished) = &self.kind {
            if !finished {
                let parked = exchange.borrow_mut().mark_disconnected();
                resolve_parked(parked);
            }
            let tasks = {
                let mut exchange = exchange.borrow_mut();
                [exchange.take_pump(), exchange.take_send_watch()]
            };
            for task in tasks.into_iter().flatten() {
                crate::runtime::with_current(|rt| rt.executor.cancel(task));
            }
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
pub(crate) fn resolve_parked(parked: Parked) {
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
