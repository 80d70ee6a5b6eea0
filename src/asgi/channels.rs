//! The `receive` and `send` callables given to the application (ASGI HTTP spec 2.3).

use std::cell::Cell;
use std::rc::Rc;
use std::task::Context;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::awaitable::Ready;
use super::exchange::{AppOutcome, ExchangeRef, ResponseHead, ResponseStage, watch_send_stall};
use super::message_fields::{Key, MessageFields};
use super::messages;
use super::response_fields::{self, NameCache};
use super::scope::{Origin, client_label};
use crate::last_response;
use crate::runtime;
use crate::server::ServerState;

/// Bodies up to this size are copied; larger ones are shared with the Python `bytes` object.
const COPY_LIMIT: usize = 4096;

/// `receive()`: the next `http.request` or `http.disconnect` message; the Python object is made
/// by [`receive_type`](super::receive_type).
pub(crate) struct Receive {
    exchange: ExchangeRef,
    state: Rc<ServerState>,
}

impl Receive {
    pub(crate) fn new(exchange: ExchangeRef, state: Rc<ServerState>) -> Self {
        Self { exchange, state }
    }

    /// The next message, or a future of it.
    pub(crate) fn call(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut exchange = self.exchange.borrow_mut();
        if let Some(message) = messages::received(py, &exchange.take_received()) {
            return Ok(Py::new(py, Ready::new(message))?.into_any());
        }
        if exchange.needs_pump() {
            let pumped = self.exchange.clone();
            let id = runtime::spawn(std::future::poll_fn(move |cx| {
                let poll = pumped.borrow_mut().pump_body(cx);
                deliver(&pumped);
                poll
            }));
            exchange.set_pump(id);
            // Poll once right away: the body is often in hyper's buffer already.
            if let Some(waker) = runtime::handle().executor.waker(id) {
                let _ = exchange.pump_body(&mut Context::from_waker(&waker));
            }
            if let Some(message) = messages::received(py, &exchange.take_received()) {
                return Ok(Py::new(py, Ready::new(message))?.into_any());
            }
        }
        let future = self.state.create_future.call0(py)?;
        exchange.set_receive_waiter(future.clone_ref(py));
        Ok(future)
    }
}

/// Hand a newly available message to a parked `receive()`.
fn deliver(exchange: &ExchangeRef) {
    let ready = exchange.borrow_mut().take_receive_ready();
    if let Some((future, received)) = ready {
        Python::attach(|py| {
            if let Some(message) = messages::received(py, &received) {
                messages::resolve(py, &future, message);
            }
        });
    }
}

/// What the access log line needs, kept only when the access log is on.
pub(crate) struct AccessInfo {
    client: String,
    method: String,
    path: String,
    version: &'static str,
}

impl AccessInfo {
    pub(crate) fn new(origin: &Origin<'_>, parts: &Parts, root_path: &str) -> Self {
        let mut path = String::with_capacity(root_path.len() + parts.uri.path().len());
        path.push_str(root_path);
        path.push_str(parts.uri.path());
        if let Some(query) = parts.uri.query() {
            path.push('?');
            path.push_str(query);
        }
        let version = match parts.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        };
        Self { client: client_label(origin), method: parts.method.to_string(), path, version }
    }
}

/// `send(message)`: `http.response.start` then `http.response.body` messages; the Python object
/// is made by [`send_type`](super::send_type).
pub(crate) struct Send {
    exchange: ExchangeRef,
    state: Rc<ServerState>,
    access: Option<AccessInfo>,
    /// Key of the application task in `ServerState::app_tasks`.
    task_key: usize,
    finished: Cell<bool>,
}

impl Send {
    pub(crate) fn new(
        exchange: ExchangeRef,
        state: Rc<ServerState>,
        access: Option<AccessInfo>,
        task_key: usize,
    ) -> Self {
        Self { exchange, state, access, task_key, finished: Cell::new(false) }
    }

    fn start(&self, py: Python<'_>, message: &MessageFields<'_, '_>) -> PyResult<()> {
        let status: u16 = message.require(Key::Status)?.extract()?;
        let status = StatusCode::from_u16(status)
            .map_err(|_| PyValueError::new_err(format!("invalid HTTP status code {status}")))?;
        let mut headers = HeaderMap::with_capacity(self.state.settings.default_headers.len() + 4);
        let mut facts = HeadFacts::default();
        for (name, value) in &self.state.settings.default_headers {
            facts.note(name, value);
            headers.append(name.clone(), value.clone());
        }
        if let Some(list) = message.get(Key::Headers)? {
            append_headers(&self.state.response_names, &list, &mut headers, &mut facts)?;
        }
        let HeadFacts { closes, content_length } = facts;
        let expected_length = content_length.flatten();
        if let Some(access) = &self.access {
            self.log_access(py, access, status.as_u16())?;
        }
        let trailers = match message.get(Key::Trailers)? {
            Some(flag) => flag.is_truthy()?,
            None => false,
        };
        let head = ResponseHead { status, headers, closes };
        self.exchange.borrow_mut().start_response(head, expected_length, trailers);
        Ok(())
    }

    /// The default access line of the response: written by tricorn while the logger allows it,
    /// else through `logging`.
    fn log_access(&self, py: Python<'_>, access: &AccessInfo, status: u16) -> PyResult<()> {
        if let Some(log) = &self.state.plain_access_log
            && log.write(py, &access.client, &access.method, &access.path, access.version, status)?
        {
            return Ok(());
        }
        let logger = self.state.access_logger.bind(py);
        logger.call_method1(
            intern!(py, "info"),
            (
                intern!(py, "%s - \"%s %s HTTP/%s\" %d"),
                access.client.as_str(),
                access.method.as_str(),
                access.path.as_str(),
                access.version,
                status,
            ),
        )?;
        Ok(())
    }

    fn body(&self, py: Python<'_>, message: &MessageFields<'_, '_>) -> PyResult<Py<PyAny>> {
        let chunk = match message.get(Key::Body)? {
            Some(body) => body_bytes(&body)?,
            None => Bytes::new(),
        };
        let more_body = match message.get(Key::MoreBody)? {
            Some(more) => more.is_truthy()?,
            None => false,
        };
        let mut exchange = self.exchange.borrow_mut();
        let sent = exchange.sent_length + chunk.len() as u64;
        if let Some(expected) = exchange.expected_length {
            if sent > expected {
                return Err(PyRuntimeError::new_err("Response content longer than Content-Length"));
            }
            if !more_body && sent < expected {
                return Err(PyRuntimeError::new_err("Response content shorter than Content-Length"));
            }
        }
        if exchange.push_body(chunk, more_body) {
            let future = self.state.create_future.call0(py)?;
            exchange.set_send_waiter(future.clone_ref(py));
            drop(exchange);
            watch_send_stall(&self.exchange);
            return Ok(future);
        }
        Ok(self.state.done.clone_ref(py).into_any())
    }

    /// `http.response.early_hint` (offered on HTTP/3 only, where a 103 can be sent): one `link`
    /// header per entry of `links`.
    fn early_hint(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut links = HeaderMap::new();
        for link in message.get_item(intern!(py, "links"))?.try_iter()? {
            let link = link?;
            let value = HeaderValue::from_bytes(header_bytes(&link, "link")?)
                .map_err(|_| PyRuntimeError::new_err("Invalid link in http.response.early_hint"))?;
            links.append(http::header::LINK, value);
        }
        if !links.is_empty() {
            self.exchange.borrow_mut().push_early_hint(links);
        }
        Ok(())
    }

    /// `http.response.pathsend` (ASGI "Path Send" extension): the rest of the body is the file at
    /// the absolute `path`, read and sent by the server.
    fn pathsend(&self, py: Python<'_>, message: &MessageFields<'_, '_>) -> PyResult<Py<PyAny>> {
        let path: std::path::PathBuf = message.require(Key::Path)?.extract()?;
        if !path.is_absolute() {
            return Err(PyValueError::new_err(format!("http.response.pathsend needs an absolute path, not {path:?}")));
        }
        let file = std::fs::File::open(&path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(PyValueError::new_err(format!("http.response.pathsend: {path:?} is not a regular file")));
        }
        let length = metadata.len();
        let mut exchange = self.exchange.borrow_mut();
        if let Some(expected) = exchange.expected_length
            && exchange.sent_length + length != expected
        {
            return Err(PyRuntimeError::new_err("Response content length differs from Content-Length"));
        }
        exchange.push_file(file, length);
        Ok(self.state.done.clone_ref(py).into_any())
    }

    /// Account for the end of the application, which returned (`returned`) or failed (its
    /// traceback logged already), and fix up the response.
    pub(crate) fn finish(&self, py: Python<'_>, returned: bool) {
        if self.finished.replace(true) {
            return;
        }
        self.state.tasks.set(self.state.tasks.get().saturating_sub(1));
        let task = self.state.app_tasks.borrow_mut().try_remove(self.task_key);
        drop(task);
        let outcome = self.exchange.borrow_mut().finish_app();
        match outcome {
            AppOutcome::NoResponse if returned => {
                self.state.log_error(py, "ASGI callable returned without starting response.");
            }
            AppOutcome::Incomplete if returned => {
                self.state.log_error(py, "ASGI callable returned without completing response.");
            }
            _ => {}
        }
    }
}

impl Send {
    /// `send(message)`.
    pub(crate) fn call(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let fields = MessageFields::read(message);
        let kind = fields.require(Key::Type)?;
        let kind = kind.cast::<PyString>().map_err(|_| PyTypeError::new_err("ASGI message 'type' must be a str"))?;
        let kind = kind.to_str()?;
        let (stage, disconnected) = {
            let exchange = self.exchange.borrow();
            (exchange.stage, exchange.disconnected)
        };
        if disconnected {
            // ASGI HTTP spec 2.3: sending on a closed connection is a no-op.
            return Ok(self.state.done.clone_ref(py).into_any());
        }
        match stage {
            ResponseStage::NotStarted if kind == "http.response.early_hint" => {
                self.early_hint(py, message)?;
                Ok(self.state.done.clone_ref(py).into_any())
            }
            ResponseStage::NotStarted => {
                if kind != "http.response.start" {
                    return Err(PyRuntimeError::new_err(format!(
                        "Expected ASGI message 'http.response.start', but got '{kind}'."
                    )));
                }
                self.start(py, &fields)?;
                Ok(self.state.done.clone_ref(py).into_any())
            }
            ResponseStage::Started => match kind {
                "http.response.body" => self.body(py, &fields),
                "http.response.pathsend" => self.pathsend(py, &fields),
                _ => Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'http.response.body', but got '{kind}'."
                ))),
            },
            ResponseStage::Trailers => {
                if kind != "http.response.trailers" {
                    return Err(PyRuntimeError::new_err(format!(
                        "Expected ASGI message 'http.response.trailers', but got '{kind}'."
                    )));
                }
                let headers = match fields.get(Key::Headers)? {
                    Some(list) => header_map(&self.state.response_names, &list, 4)?,
                    None => HeaderMap::new(),
                };
                let more = match fields.get(Key::MoreTrailers)? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                self.exchange.borrow_mut().push_trailers(headers, more);
                Ok(self.state.done.clone_ref(py).into_any())
            }
            ResponseStage::Complete => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{kind}' sent, after response already completed."
            ))),
        }
    }
}

/// What the response head's fields say, noted as they are appended.
#[derive(Default)]
struct HeadFacts {
    /// A `Connection: close` field ends the connection.
    closes: bool,
    /// The first `Content-Length` field, parsed (`Some(None)`: present but not a number).
    content_length: Option<Option<u64>>,
}

impl HeadFacts {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == http::header::CONTENT_LENGTH {
            if self.content_length.is_none() {
                self.content_length = Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
            }
        } else {
            self.closes |= last_response::closes(name, value);
        }
    }
}

/// Append ASGI `[(name, value), ...]` byte-string pairs to `headers`, noting in `facts` what
/// they say.
///
/// A list of 2-tuples, what nearly every app sends, is read without the iterator protocol or
/// integer indexing; any other iterable of pairs takes the generic path.
fn append_headers(
    names: &NameCache,
    list: &Bound<'_, PyAny>,
    headers: &mut HeaderMap,
    facts: &mut HeadFacts,
) -> PyResult<()> {
    if let Ok(list) = list.cast::<PyList>() {
        for pair in list.iter() {
            match pair.cast::<PyTuple>() {
                Ok(tuple) if tuple.len() == 2 => {
                    let (name, value) = (tuple.get_borrowed_item(0)?, tuple.get_borrowed_item(1)?);
                    append_header(names, headers, facts, &name, &value)?;
                }
                _ => append_pair(names, headers, facts, &pair)?,
            }
        }
        return Ok(());
    }
    for pair in list.try_iter()? {
        append_pair(names, headers, facts, &pair?)?;
    }
    Ok(())
}

/// Append one `[name, value]` pair given as any iterable of exactly two items.
fn append_pair(
    names: &NameCache,
    headers: &mut HeaderMap,
    facts: &mut HeadFacts,
    pair: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let not_a_pair = || PyTypeError::new_err("ASGI header must be a [name, value] pair");
    let mut items = pair.try_iter().map_err(|_| not_a_pair())?;
    let name = items.next().ok_or_else(not_a_pair)??;
    let value = items.next().ok_or_else(not_a_pair)??;
    if items.next().is_some() {
        return Err(not_a_pair());
    }
    append_header(names, headers, facts, &name, &value)
}

/// Append one field.
fn append_header(
    names: &NameCache,
    headers: &mut HeaderMap,
    facts: &mut HeadFacts,
    name: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let name =
        names.name(name.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("ASGI header name must be bytes"))?)?;
    let value = response_fields::value(header_bytes(value, "value")?)
        .map_err(|_| PyRuntimeError::new_err(format!("Invalid HTTP header value for {name:?}")))?;
    facts.note(&name, &value);
    headers.append(name, value);
    Ok(())
}

/// A header map from ASGI byte-string pairs.
fn header_map(names: &NameCache, list: &Bound<'_, PyAny>, capacity: usize) -> PyResult<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(capacity);
    append_headers(names, list, &mut headers, &mut HeadFacts::default())?;
    Ok(headers)
}

fn header_bytes<'a>(value: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    value
        .cast::<PyBytes>()
        .map(|b| b.as_bytes())
        .map_err(|_| PyTypeError::new_err(format!("ASGI header {what} must be bytes")))
}

fn body_bytes(body: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let bytes = body.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("ASGI 'body' must be bytes"))?;
    let data = bytes.as_bytes();
    if data.len() <= COPY_LIMIT {
        return Ok(Bytes::copy_from_slice(data));
    }
    Ok(Bytes::from_owner(PyBackedBytes::from(bytes.clone())))
}
