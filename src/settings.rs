//! Server settings handed over by the Python package, checked once at start-up.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyDictMethods};

use crate::proxy_headers::TrustedHosts;

/// Everything the network side needs to know about the configuration.
pub(crate) struct Settings {
    /// ASGI `root_path`, also prefixed to `path` and `raw_path` (as uvicorn does).
    pub(crate) root_path: String,
    /// Headers added to every response before the application's (`server`, `--header`).
    pub(crate) default_headers: Vec<(HeaderName, HeaderValue)>,
    /// Add a `date` header to responses.
    pub(crate) date_header: bool,
    /// Close a keep-alive connection idle for this long.
    pub(crate) timeout_keep_alive: Duration,
    /// Answer 503 above this many connections or running tasks.
    pub(crate) limit_concurrency: Option<usize>,
    /// Log one line per response on the access logger.
    pub(crate) access_log: bool,
    /// Honour `X-Forwarded-For`/`X-Forwarded-Proto` from trusted peers.
    pub(crate) proxy_headers: bool,
    /// Peers whose proxy headers are trusted.
    pub(crate) trusted_hosts: TrustedHosts,
    /// Largest request body accepted; bigger ones get 413.
    pub(crate) limit_request_body: Option<u64>,
    /// Run each request in a fresh `contextvars.Context()` instead of a copy of the server's.
    pub(crate) reset_contextvars: bool,
}

fn required<'py>(dict: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    dict.get_item(key)?.ok_or_else(|| PyValueError::new_err(format!("missing setting {key:?}")))
}

impl Settings {
    /// Read and validate the settings dict (keys documented in `_tricorn.pyi`).
    pub(crate) fn from_dict(dict: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut default_headers = Vec::new();
        for pair in required(dict, "default_headers")?.try_iter()? {
            let (name, value): (Vec<u8>, Vec<u8>) = pair?.extract()?;
            let name = HeaderName::from_bytes(&name).map_err(|_| {
                PyValueError::new_err(format!("invalid header name {:?}", String::from_utf8_lossy(&name)))
            })?;
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))?;
            default_headers.push((name, value));
        }
        let timeout_keep_alive: f64 = required(dict, "timeout_keep_alive")?.extract()?;
        if !(timeout_keep_alive.is_finite() && timeout_keep_alive > 0.0) {
            return Err(PyValueError::new_err("timeout_keep_alive must be a positive number of seconds"));
        }
        let allow: Vec<String> = required(dict, "forwarded_allow_ips")?.extract()?;
        Ok(Self {
            root_path: required(dict, "root_path")?.extract()?,
            default_headers,
            date_header: required(dict, "date_header")?.extract()?,
            timeout_keep_alive: Duration::from_secs_f64(timeout_keep_alive),
            limit_concurrency: required(dict, "limit_concurrency")?.extract()?,
            access_log: required(dict, "access_log")?.extract()?,
            proxy_headers: required(dict, "proxy_headers")?.extract()?,
            trusted_hosts: TrustedHosts::parse(&allow),
            limit_request_body: required(dict, "limit_request_body")?.extract()?,
            reset_contextvars: required(dict, "reset_contextvars")?.extract()?,
        })
    }
}
