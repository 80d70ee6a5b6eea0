//! The state of one request/response exchange, shared by the network side (hyper's service
//! future and response body) and the application side (`receive()` and `send()`).
//!
//! Everything lives on the loop thread, so the state is an `Rc<RefCell<..>>`. Python futures
//! are resolved only after the borrow is released, as resolving one may run Python code.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame};
use pyo3::prelude::*;

use super::access_log::AccessRecord;
use super::body::{BodyError, RequestBody};
use super::chunk_queue::ChunkQueue;
use crate::runtime::timer::{self, Sleep};
use crate::settings::Settings;

/// Buffered request body above which the socket stops being read (as uvicorn's 64 KiB).
pub(crate) const REQUEST_HIGH_WATER: usize = 64 * 1024;
/// Queued response body above which `send()` waits for the client to read.
pub(crate) const RESPONSE_HIGH_WATER: usize = 64 * 1024;
/// Bytes read from a file at a time for `http.response.pathsend`.
const FILE_CHUNK: u64 = 256 * 1024;

/// A file being sent as the response body (`http.response.pathsend`).
struct FileBody {
    file: std::fs::File,
    remaining: u64,
}

/// Shared handle on an exchange.
pub(crate) type ExchangeRef = Rc<RefCell<Exchange>>;

/// A poll of the response body: the next data or trailers frame, the end, or an abort.
pub(crate) type ChunkPoll = Poll<Option<Result<Frame<Bytes>, Aborted>>>;

/// Status line and headers the application sent with `http.response.start`.
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// A field ends the connection (`Connection: close`, see `last_response::closes`).
    pub(crate) closes: bool,
}

/// Where the response is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ResponseStage {
    /// `http.response.start` not sent yet.
    NotStarted,
    /// Head sent; body messages may follow.
    Started,
    /// The last body message was sent; `http.response.trailers` messages follow.
    Trailers,
    /// The last body message was sent.
    Complete,
}

/// What a `receive()` call gets.
pub(crate) enum Received {
    /// An `http.request` message.
    Body { body: Bytes, more_body: bool },
    /// An `http.disconnect` message.
    Disconnect,
    /// Nothing yet: the caller must wait.
    Wait,
}

/// One exchange.
pub(crate) struct Exchange {
    // Request side.
    incoming: Option<RequestBody>,
    body_chunks: BytesMut,
    body_finished: bool,
    /// The message with `more_body == False` was handed to the application.
    end_delivered: bool,
    /// A `receive()` waiting for a message: an asyncio future.
    receive_waiter: Option<Py<PyAny>>,
    /// Id of the task pumping the request body, once spawned.
    pump: Option<usize>,
    pump_waker: Option<Waker>,
    limit_request_body: Option<u64>,
    body_received: u64,
    /// `--timeout-body-read`: how long the body may stall while the application waits for it.
    body_timeout: Option<Duration>,
    /// Armed while the pump waits for the client; `body_progress` is when data last came.
    body_timer: Option<Sleep>,
    body_progress: Instant,
    /// The server ended the request: the status to answer if no response started (400 for a
    /// malformed body, 408 for a stalled one, 413 for one over the limit).
    pub(crate) rejection: Option<StatusCode>,
    // Response side.
    pub(crate) stage: ResponseStage,
    head: Option<ResponseHead>,
    /// The first body message arrived (or the app finished), so hyper may take the head.
    head_ready: bool,
    chunks: ChunkQueue,
    queued: usize,
    /// A file to send after the queued chunks.
    file: Option<FileBody>,
    pub(crate) expected_length: Option<u64>,
    pub(crate) sent_length: u64,
    /// The app announced trailers in `http.response.start`.
    trailers_expected: bool,
    /// Trailers received so far; handed to hyper once the last trailers message arrived.
    trailers: Option<HeaderMap>,
    /// Drop body chunks instead of sending them (see [`Exchange::new`]).
    pub(crate) discard_body: bool,
    /// A `send()` waiting for the client to read: an asyncio future.
    send_waiter: Option<Py<PyAny>>,
    /// `--timeout-send`: how long a parked `send()` may wait without the network taking data.
    send_timeout: Option<Duration>,
    /// When the network last took body data, while a send-stall watch runs.
    send_progress: Instant,
    /// Id of the task timing a parked `send()`, while one runs (see [`watch_send_stall`]).
    send_watch: Option<usize>,
    head_waker: Option<Waker>,
    /// `http.response.early_hint` messages not yet sent (HTTP/3 only), as `link` headers.
    early_hints: VecDeque<HeaderMap>,
    body_waker: Option<Waker>,
    /// The `--access-log-format` line in the making.
    pub(crate) access_record: Option<Box<AccessRecord>>,
    // Both sides.
    /// The client went away, or the connection was aborted.
    pub(crate) disconnected: bool,
    /// The response must end with an error (closing the connection) instead of completing.
    aborted: bool,
}

impl Exchange {
    /// A new exchange for a request whose body is `incoming`.
    ///
    /// `discard_body`: the response must carry no content (HEAD over HTTP/2, where hyper does not
    /// drop it as its HTTP/1.1 side does, RFC 9113 §8.1.1): body messages are counted, not queued,
    /// and the head waits for the last one so that it goes out with END_STREAM.
    pub(crate) fn new(incoming: RequestBody, settings: &Settings, discard_body: bool) -> ExchangeRef {
        let finished = incoming.is_end_stream();
        Rc::new(RefCell::new(Self {
            incoming: (!finished).then_some(incoming),
            body_chunks: BytesMut::new(),
            body_finished: finished,
            end_delivered: false,
            receive_waiter: None,
            pump: None,
            pump_waker: None,
            limit_request_body: settings.limit_request_body,
            body_received: 0,
            body_timeout: settings.timeout_body_read,
            body_timer: None,
            body_progress: timer::now(),
            rejection: None,
            stage: ResponseStage::NotStarted,
            head: None,
            head_ready: false,
            chunks: ChunkQueue::default(),
            queued: 0,
            file: None,
            expected_length: None,
            sent_length: 0,
            trailers_expected: false,
            trailers: None,
            discard_body,
            send_waiter: None,
            send_timeout: settings.timeout_send,
            send_progress: timer::now(),
            send_watch: None,
            head_waker: None,
            early_hints: VecDeque::new(),
            body_waker: None,
            access_record: None,
            disconnected: false,
            aborted: false,
        }))
    }

    // ---- request body ----

    /// Take what a `receive()` call returns now, if anything (ASGI HTTP spec, "Request").
    pub(crate) fn take_received(&mut self) -> Received {
        if self.disconnected || self.stage == ResponseStage::Complete {
            return Received::Disconnect;
        }
        if !self.body_chunks.is_empty() || (self.body_finished && !self.end_delivered) {
            self.end_delivered = self.body_finished;
            let body = self.body_chunks.split().freeze();
            if let Some(waker) = self.pump_waker.take() {
                waker.wake();
            }
            return Received::Body { body, more_body: !self.body_finished };
        }
        Received::Wait
    }

    /// Whether the request body still needs a pump task.
    pub(crate) fn needs_pump(&self) -> bool {
        self.incoming.is_some() && self.pump.is_none()
    }

    /// Remember the id of the pump task.
    pub(crate) fn set_pump(&mut self, id: usize) {
        self.pump = Some(id);
    }

    /// Move request body data from the connection into the buffer, up to the high-water mark.
    ///
    /// Polling the body is also what makes hyper send `100 Continue` (RFC 9110 §10.1.1) when the
    /// client asked for it: the first poll happens on the application's first `receive()`.
    /// Returns `Ready` when the body is finished (or failed).
    pub(crate) fn pump_body(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(incoming) = self.incoming.as_mut() else {
                return Poll::Ready(());
            };
            if self.body_chunks.len() >= REQUEST_HIGH_WATER {
                // The application is not reading: the client is not the one stalling.
                self.body_timer = None;
                self.pump_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match Pin::new(incoming).poll_frame(cx) {
                Poll::Pending => return self.wait_for_body(cx),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.body_received += data.len() as u64;
                        if self.limit_request_body.is_some_and(|limit| self.body_received > limit) {
                            self.end_request(StatusCode::PAYLOAD_TOO_LARGE);
                            return Poll::Ready(());
                        }
                        if self.body_timer.is_some() {
                            self.body_progress = timer::now();
                        }
                        self.body_chunks.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => {
                    self.incoming = None;
                    self.body_timer = None;
                    self.body_finished = true;
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(err))) => {
                    if err == BodyError::Malformed {
                        // RFC 9112 §7.1: a chunked body hyper could not decode.
                        self.end_request(StatusCode::BAD_REQUEST);
                    } else {
                        // A body that breaks off (connection lost mid-body) is a disconnect.
                        self.incoming = None;
                        self.body_timer = None;
                        self.disconnected = true;
                    }
                    return Poll::Ready(());
                }
            }
        }
    }

    /// The pump waits for the client: time the stall (`--timeout-body-read`). The timer is
    /// moved lazily: data only records the time, and a timer that fires early is re-armed.
    fn wait_for_body(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(limit) = self.body_timeout else {
            return Poll::Pending;
        };
        if self.body_timer.is_none() {
            self.body_progress = timer::now();
        }
        let deadline = self.body_progress + limit;
        let sleep = self.body_timer.get_or_insert_with(|| Sleep::until(deadline));
        loop {
            match Pin::new(&mut *sleep).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if sleep.deadline() >= deadline => break,
                Poll::Ready(()) => sleep.reset(deadline),
            }
        }
        // RFC 9110 §15.5.9: the request did not arrive within the time the server waits.
        self.end_request(StatusCode::REQUEST_TIMEOUT);
        Poll::Ready(())
    }

    /// The server ends the request: the application gets `http.disconnect`, and the response is
    /// `status` (closing the connection) if none started, else it is cut off.
    fn end_request(&mut self, status: StatusCode) {
        self.incoming = None;
        self.body_timer = None;
        self.disconnected = true;
        self.aborted = true;
        if self.stage == ResponseStage::NotStarted {
            self.rejection = Some(status);
        }
        self.wake_network();
    }

    /// Park a `receive()` future until a message is available.
    pub(crate) fn set_receive_waiter(&mut self, future: Py<PyAny>) {
        self.receive_waiter = Some(future);
    }

    /// Take the parked `receive()` future if its message is now available.
    pub(crate) fn take_receive_ready(&mut self) -> Option<(Py<PyAny>, Received)> {
        self.receive_waiter.as_ref()?;
        match self.take_received() {
            Received::Wait => None,
            received => self.receive_waiter.take().map(|future| (future, received)),
        }
    }

    // ---- response ----

    /// Record `http.response.start`; `trailers` announces `http.response.trailers` messages.
    pub(crate) fn start_response(&mut self, head: ResponseHead, expected_length: Option<u64>, trailers: bool) {
        self.stage = ResponseStage::Started;
        if let Some(record) = &mut self.access_record {
            record.set_response(head.status.as_u16(), &head.headers);
        }
        self.head = Some(head);
        self.expected_length = expected_length;
        self.trailers_expected = trailers;
    }

    /// Queue a 103 (Early Hints, RFC 8297) response with these `link` headers.
    pub(crate) fn push_early_hint(&mut self, links: HeaderMap) {
        self.early_hints.push_back(links);
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
    }

    /// The next early hint to send, before the response head.
    pub(crate) fn take_early_hint(&mut self) -> Option<HeaderMap> {
        self.early_hints.pop_front()
    }

    /// Record an `http.response.trailers` message; the last one completes the response.
    pub(crate) fn push_trailers(&mut self, headers: HeaderMap, more_trailers: bool) {
        match &mut self.trailers {
            Some(trailers) => trailers.extend(headers),
            None => self.trailers = Some(headers),
        }
        if !more_trailers {
            self.stage = ResponseStage::Complete;
            self.wake_network();
        }
    }

    /// Queue a body chunk; `more_body == false` completes the response. Returns whether the
    /// caller should wait for the client to read (backpressure).
    pub(crate) fn push_body(&mut self, chunk: Bytes, more_body: bool) -> bool {
        self.sent_length += chunk.len() as u64;
        if !chunk.is_empty() && !self.discard_body {
            self.queued += chunk.len();
            self.chunks.push_back(chunk);
        }
        if !more_body {
            self.stage = if self.trailers_expected { ResponseStage::Trailers } else { ResponseStage::Complete };
        }
        self.head_ready = true;
        self.wake_network();
        more_body && self.queued > RESPONSE_HIGH_WATER
    }

    /// Send `file` (`length` bytes) as the rest of the body and complete the response; a
    /// `content-length` is added to the head if the application did not set one.
    pub(crate) fn push_file(&mut self, file: std::fs::File, length: u64) {
        if let Some(head) = &mut self.head
            && !head.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            head.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(self.sent_length + length));
            self.expected_length = Some(self.sent_length + length);
        }
        self.sent_length += length;
        if length > 0 && !self.discard_body {
            self.file = Some(FileBody { file, remaining: length });
        }
        self.stage = if self.trailers_expected { ResponseStage::Trailers } else { ResponseStage::Complete };
        self.head_ready = true;
        self.wake_network();
    }

    /// The next chunk of the file being sent; the file is dropped after its last byte.
    fn read_file_chunk(&mut self) -> Option<Result<Bytes, Aborted>> {
        let body = self.file.as_mut()?;
        let size = body.remaining.min(FILE_CHUNK);
        // `read_to_end` reads into the vector's spare capacity: no pass to zero it first, which
        // matters on large files, where memory bandwidth is the cost (copy in, copy out).
        let mut chunk = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read = std::io::Read::read_to_end(&mut std::io::Read::take(&mut body.file, size), &mut chunk);
        body.remaining -= size;
        // A file that shrank or cannot be read any more: the response cannot complete.
        let complete = read.is_ok_and(|n| n as u64 == size);
        if !complete || body.remaining == 0 {
            self.file = None;
        }
        Some(if complete { Ok(Bytes::from(chunk)) } else { Err(Aborted) })
    }

    /// Park a `send()` future until the queued body drains.
    pub(crate) fn set_send_waiter(&mut self, future: Py<PyAny>) {
        self.send_waiter = Some(future);
    }

    /// The application finished (returned or raised). Returns what the network side must do.
    pub(crate) fn finish_app(&mut self) -> AppOutcome {
        let outcome = match self.stage {
            // Nothing to complete once the network side is gone (as uvicorn: no error is logged). That
            // includes hyper ending a Content-Length body at its last byte, before the app's final
            // `more_body: False` message.
            _ if self.disconnected => AppOutcome::Fine,
            ResponseStage::NotStarted => AppOutcome::NoResponse,
            ResponseStage::Started | ResponseStage::Trailers => {
                self.aborted = true;
                AppOutcome::Incomplete
            }
            ResponseStage::Complete => AppOutcome::Fine,
        };
        self.head_ready = true;
        self.wake_network();
        outcome
    }

    fn wake_network(&mut self) {
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.body_waker.take() {
            waker.wake();
        }
    }

    /// Whether [`poll_head`](Self::poll_head) would return at once: the head may be written,
    /// or the exchange was aborted.
    pub(crate) fn head_settled(&self) -> bool {
        let ready = if self.discard_body {
            self.stage == ResponseStage::Complete || (self.head_ready && self.stage == ResponseStage::NotStarted)
        } else {
            self.head_ready
        };
        ready || self.aborted
    }

    /// For hyper's service future: the head, once it may be written.
    pub(crate) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseHead>> {
        if self.head_settled() {
            return Poll::Ready(self.head.take());
        }
        self.head_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// For hyper's response body: the next chunk, the end, or an abort.
    ///
    /// Also returns the `send()` future to resolve if the queue drained below the mark.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> (ChunkPoll, Option<Py<PyAny>>) {
        let poll = if let Some(chunk) = self.chunks.pop_front() {
            self.queued -= chunk.len();
            if self.send_watch.is_some() {
                self.send_progress = timer::now();
            }
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        } else if let Some(chunk) = self.read_file_chunk() {
            if chunk.is_err() {
                self.aborted = true;
            }
            Poll::Ready(Some(chunk.map(Frame::data)))
        } else if self.aborted {
            Poll::Ready(Some(Err(Aborted)))
        } else if self.stage == ResponseStage::Complete {
            Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
        } else {
            self.body_waker = Some(cx.waker().clone());
            Poll::Pending
        };
        let drained = if self.queued <= RESPONSE_HIGH_WATER { self.send_waiter.take() } else { None };
        (poll, drained)
    }

    /// Whether the whole body is queued, and its size.
    pub(crate) fn known_length(&self) -> Option<u64> {
        let file = self.file.as_ref().map_or(0, |f| f.remaining);
        (self.stage == ResponseStage::Complete && !self.aborted && !self.trailers_expected)
            .then_some(self.queued as u64 + file)
    }

    /// Whether nothing more will come from the body.
    pub(crate) fn body_is_end(&self) -> bool {
        self.chunks.is_empty()
            && self.file.is_none()
            && self.stage == ResponseStage::Complete
            && self.trailers.is_none()
            && !self.aborted
    }

    /// The network side is gone (connection closed or the exchange dropped before the end).
    /// Returns the parked futures to resolve.
    pub(crate) fn mark_disconnected(&mut self) -> Parked {
        self.disconnected = true;
        self.incoming = None;
        Parked { receive: self.receive_waiter.take(), send: self.send_waiter.take() }
    }

    /// The response body was fully written.
    pub(crate) fn mark_sent(&mut self) -> Option<Py<PyAny>> {
        self.receive_waiter.take()
    }

    /// The `--access-log-format` record and the body bytes sent, once: the response is over.
    /// The caller writes the line after releasing the exchange (logging runs Python code).
    pub(crate) fn take_access_record(&mut self) -> Option<(Box<AccessRecord>, u64)> {
        let bytes = if self.discard_body { 0 } else { self.sent_length };
        self.access_record.take().map(|record| (record, bytes))
    }

    /// Id of the pump task, to cancel it when the exchange ends.
    pub(crate) fn take_pump(&mut self) -> Option<usize> {
        self.pump.take()
    }

    /// Id of the send-stall watch, to cancel it when the exchange ends.
    pub(crate) fn take_send_watch(&mut self) -> Option<usize> {
        self.send_watch.take()
    }

    /// A parked `send()` waited `--timeout-send` without the network taking any data: the
    /// client stopped reading this response (on HTTP/2 and HTTP/3 it can withhold flow-control
    /// credit for one stream while the connection stays busy, which the connection's watchdog
    /// cannot see). The application gets `http.disconnect`, the queued body is dropped and the
    /// response ends in an error once the network polls it (a stream reset, or on HTTP/1.1 a
    /// closed connection). Returns the parked futures to resolve.
    fn stall_send(&mut self) -> Parked {
        self.chunks.clear();
        self.queued = 0;
        self.file = None;
        self.aborted = true;
        self.wake_network();
        self.mark_disconnected()
    }
}

/// Time the `send()` just parked on `exchange` (`--timeout-send`): one task per exchange runs
/// while sends keep parking, re-armed lazily from the time the network last took data, and
/// ends the exchange with [`Exchange::stall_send`] if a parked send sees no progress in time.
pub(crate) fn watch_send_stall(exchange: &ExchangeRef) {
    let mut ex = exchange.borrow_mut();
    let Some(limit) = ex.send_timeout else {
        return;
    };
    if ex.send_watch.is_some() {
        return;
    }
    ex.send_progress = timer::now();
    let mut sleep = Sleep::until(ex.send_progress + limit);
    let watched = exchange.clone();
    ex.send_watch = Some(crate::runtime::spawn(std::future::poll_fn(move |cx| {
        loop {
            std::task::ready!(Pin::new(&mut sleep).poll(cx));
            let mut ex = watched.borrow_mut();
            if ex.send_waiter.is_none() || ex.disconnected {
                ex.send_watch = None;
                return Poll::Ready(());
            }
            let deadline = ex.send_progress + limit;
            if sleep.deadline() < deadline {
                sleep.reset(deadline);
                continue;
            }
            ex.send_watch = None;
            let parked = ex.stall_send();
            drop(ex);
            crate::asgi::service::resolve_parked(parked);
            return Poll::Ready(());
        }
    })));
}

/// What finishing the application means for the response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppOutcome {
    /// The response was complete (or the client had gone).
    Fine,
    /// No response was started: answer 500.
    NoResponse,
    /// The response was started but not completed: the connection is closed.
    Incomplete,
}

/// Futures parked on an exchange that ended.
pub(crate) struct Parked {
    pub(crate) receive: Option<Py<PyAny>>,
    pub(crate) send: Option<Py<PyAny>>,
}

/// The response was aborted after it started: hyper closes the connection.
#[derive(Debug)]
pub(crate) struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response aborted")
    }
}

impl std::error::Error for Aborted {}
