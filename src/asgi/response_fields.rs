//! Response header names and values from the application's `bytes`, converted with as little
//! work as possible.
//!
//! - Names: an application sends the same few names in every response, nearly always as
//!   literals of its code (`b"content-type"`), that is as the same `bytes` objects each time.
//!   [`NameCache`] keeps the conversion of such objects, found again by identity.
//! - Values: a few are common to most applications (`text/plain; charset=utf-8`,
//!   `application/json`); they become static values, which need no allocation.

use std::cell::RefCell;

use http::{HeaderName, HeaderValue};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Names kept at most: an application's literal names fit many times over.
const NAMES: usize = 16;

/// A common value as a static one, made at compile time (`from_static` called at run time checks
/// every byte); `None` for any other.
fn static_value(bytes: &[u8]) -> Option<HeaderValue> {
    const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
    const TEXT_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
    const HTML_UTF8: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
    const CLOSE: HeaderValue = HeaderValue::from_static("close");
    const KEEP_ALIVE: HeaderValue = HeaderValue::from_static("keep-alive");
    const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
    Some(match bytes {
        b"text/plain" => TEXT,
        b"text/plain; charset=utf-8" => TEXT_UTF8,
        b"text/html; charset=utf-8" => HTML_UTF8,
        b"application/json" => JSON,
        b"application/json; charset=utf-8" => JSON_UTF8,
        b"close" => CLOSE,
        b"keep-alive" => KEEP_ALIVE,
        b"no-cache" => NO_CACHE,
        _ => return None,
    })
}

/// Header names converted from `bytes` objects the application sends again and again.
#[derive(Default)]
pub(crate) struct NameCache {
    /// The objects (held, so that no other object takes their address) and their names.
    names: RefCell<Vec<(Py<PyBytes>, HeaderName)>>,
}

impl NameCache {
    /// The header name in `bytes`.
    ///
    /// An object another reference than the message's holds too (a literal of the application's
    /// code, say) is kept while there is room: it is likely to come again. One made for the
    /// message alone (`name.encode()`) is not.
    pub(crate) fn name(&self, bytes: &Bound<'_, PyBytes>) -> PyResult<HeaderName> {
        if let Some((_, name)) = self.names.borrow().iter().find(|(kept, _)| kept.as_ptr() == bytes.as_ptr()) {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(bytes.as_bytes()).map_err(|_| {
            PyRuntimeError::new_err(format!(
                "Invalid HTTP header name: {:?}",
                String::from_utf8_lossy(bytes.as_bytes())
            ))
        })?;
        // SAFETY: `bytes` is a live object; its reference count is only read.
        let shared = unsafe { ffi::Py_REFCNT(bytes.as_ptr()) } > 1;
        let mut names = self.names.borrow_mut();
        if shared && names.len() < NAMES {
            names.push((bytes.clone().unbind(), name.clone()));
        }
        Ok(name)
    }
}

/// The header value in `bytes`: a static one when it is one of the common values.
pub(crate) fn value(bytes: &[u8]) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    match static_value(bytes) {
        Some(common) => Ok(common),
        None => HeaderValue::from_bytes(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_values_are_static_and_others_are_copied() {
        assert_eq!(value(b"application/json").unwrap(), "application/json");
        assert_eq!(value(b"text/plain; charset=utf-8").unwrap(), "text/plain; charset=utf-8");
        assert_eq!(value(b"12").unwrap(), "12");
        assert!(value(b"bad\nvalue").is_err());
    }
}
