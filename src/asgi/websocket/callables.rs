//! The `receive` and `send` callables of a WebSocket scope.

use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio_tungstenite::tungstenite::Message;

use super::state::{Decision, SEND_HIGH_WATER, Stage, WsRef};
use crate::asgi::awaitable::Ready;
use crate::server::{ClientDisconnected, ServerState};

/// `receive()` of a WebSocket scope.
#[pyclass(module = "tricorn._tricorn", unsendable)]
pub(crate) struct WsReceive {
    pub(super) ws: WsRef,
    pub(super) state: Rc<ServerState>,
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

/// `send()` of a WebSocket scope.
#[pyclass(module = "tricorn._tricorn", unsendable)]
pub(crate) struct WsSend {
    pub(super) ws: WsRef,
    pub(super) state: Rc<ServerState>,
    pub(super) task_key: usize,
    pub(super) finished: bool,
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
}

impl WsSend {
    /// The application returned (`returned`) or failed: the handshake is refused or the
    /// WebSocket closed (1000, or 1011 after a failure) unless the application did it.
    pub(crate) fn finish(&mut self, py: Python<'_>, returned: bool) {
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
