//! The default access line (`INFO:     127.0.0.1:5000 - "GET / HTTP/1.1" 200 OK`) written by
//! tricorn itself while the `tricorn.access` logger is configured as by default.
//!
//! Through Python's `logging` one line costs about 135,000 instructions a request, more than
//! three times the rest of a hello-world request: a `LogRecord`, the formatter's copy of it,
//! the handler's lock, a `write` and a `flush` system call. When the logger has just the
//! default handler (a plain `StreamHandler` with `AccessFormatter`'s default format, no colours,
//! no filters), the Python side hands that handler over (`tricorn.logging.plain_access_handler`),
//! and the line is made here and queued; the queued lines go to the handler's stream in one
//! `write` and one `flush` at the next `drive()` pass (a loop iteration later), whether the
//! stream is buffered or not (`PYTHONUNBUFFERED`). Each line first checks that the logger is
//! still configured so (a level raised, a handler added or a formatter swapped at run time send
//! the line through `logging` again).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

/// `logging.INFO`.
const INFO: u8 = 20;

/// Writes default access lines to the stream of the access logger's one handler.
pub(crate) struct PlainAccessLog {
    logger: Py<PyAny>,
    handler: Py<PyAny>,
    formatter: Py<PyAny>,
    /// Reason phrases by status code, as Python's `http.HTTPStatus` has them.
    phrases: HashMap<u16, String>,
    /// Lines not yet written to the stream.
    pending: RefCell<String>,
}

impl PlainAccessLog {
    /// For `handler`, the one handler of `logger`; `phrases` maps status codes to reasons.
    pub(crate) fn new(
        logger: &Bound<'_, PyAny>,
        handler: &Bound<'_, PyAny>,
        phrases: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let phrases =
            phrases.iter().map(|(code, phrase)| Ok((code.extract()?, phrase.extract()?))).collect::<PyResult<_>>()?;
        Ok(Self {
            logger: logger.clone().unbind(),
            formatter: handler.getattr(intern!(handler.py(), "formatter"))?.unbind(),
            handler: handler.clone().unbind(),
            phrases,
            pending: RefCell::new(String::with_capacity(4096)),
        })
    }

    /// Queue the line of a response; `false` if the logger is no longer configured as it was,
    /// and the caller must log the line through `logging` (the lines queued before are written
    /// first, so that the order holds).
    pub(crate) fn write(
        &self,
        py: Python<'_>,
        client: &str,
        method: &str,
        path: &str,
        version: &str,
        status: u16,
    ) -> PyResult<bool> {
        let logger = self.logger.bind(py);
        let handler = self.handler.bind(py);
        if !logger.call_method1(intern!(py, "isEnabledFor"), (INFO,))?.is_truthy()? {
            return Ok(true);
        }
        let handlers = logger.getattr(intern!(py, "handlers"))?;
        let handlers = handlers.cast::<PyList>()?;
        let unchanged = handlers.len() == 1
            && handlers.get_item(0)?.is(handler)
            && !logger.getattr(intern!(py, "propagate"))?.is_truthy()?
            && handler.getattr(intern!(py, "formatter"))?.is(&self.formatter)
            && handler.getattr(intern!(py, "level"))?.extract::<i64>()? <= i64::from(INFO)
            && is_empty(&logger.getattr(intern!(py, "filters"))?)?
            && is_empty(&handler.getattr(intern!(py, "filters"))?)?;
        if !unchanged {
            self.flush(py)?;
            return Ok(false);
        }
        let phrase = self.phrases.get(&status).map_or("", String::as_str);
        // `AccessFormatter`'s default: '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'.
        let _ = writeln!(
            self.pending.borrow_mut(),
            "INFO:     {client} - \"{method} {path} HTTP/{version}\" {status} {phrase}"
        );
        Ok(true)
    }

    /// Write the queued lines to the handler's stream and flush it.
    pub(crate) fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let lines = {
            let mut pending = self.pending.borrow_mut();
            if pending.is_empty() {
                return Ok(());
            }
            let lines = PyString::new(py, &pending);
            pending.clear();
            lines
        };
        let handler = self.handler.bind(py);
        handler.getattr(intern!(py, "stream"))?.call_method1(intern!(py, "write"), (lines,))?;
        handler.call_method0(intern!(py, "flush"))?;
        Ok(())
    }
}

impl Drop for PlainAccessLog {
    /// Lines queued by the last requests of a server that stops are written too.
    fn drop(&mut self) {
        if !self.pending.get_mut().is_empty() {
            Python::attach(|py| {
                if let Err(err) = self.flush(py) {
                    err.write_unraisable(py, None);
                }
            });
        }
    }
}

fn is_empty(list: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(list.len()? == 0)
}
