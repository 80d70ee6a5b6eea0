//! ASGI HTTP event dicts going to the application, and resolving parked futures.

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::exchange::Received;

/// `{"type": "http.disconnect"}`
pub(crate) fn disconnect(py: Python<'_>) -> Py<PyAny> {
    let message = PyDict::new(py);
    // Setting a str key on a fresh dict cannot fail.
    let _ = message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"));
    message.into_any().unbind()
}

/// `{"type": "http.request", "body": ..., "more_body": ...}`
pub(crate) fn request(py: Python<'_>, body: &Bytes, more_body: bool) -> Py<PyAny> {
    let message = PyDict::new(py);
    let _ = message.set_item(intern!(py, "type"), intern!(py, "http.request"));
    let _ = message.set_item(intern!(py, "body"), PyBytes::new(py, body));
    let _ = message.set_item(intern!(py, "more_body"), more_body);
    message.into_any().unbind()
}

/// The message for what `receive()` got; `None` when it must wait.
pub(crate) fn received(py: Python<'_>, received: &Received) -> Option<Py<PyAny>> {
    match received {
        Received::Body { body, more_body } => Some(request(py, body, *more_body)),
        Received::Disconnect => Some(disconnect(py)),
        Received::Wait => None,
    }
}

/// Complete an asyncio future with `value` unless it is already done (cancelled by the app).
pub(crate) fn resolve(py: Python<'_>, future: &Py<PyAny>, value: Py<PyAny>) {
    let future = future.bind(py);
    let done = future.call_method0(intern!(py, "done")).and_then(|d| d.is_truthy()).unwrap_or(true);
    if !done && let Err(err) = future.call_method1(intern!(py, "set_result"), (value,)) {
        err.write_unraisable(py, Some(future));
    }
}
