//! The keys `send()` reads from a response message, taken in one pass over the message.
//!
//! `http.response.start` is read for `type`, `status`, `headers` and `trailers`,
//! `http.response.body` for `type`, `body` and `more_body`, `http.response.pathsend` for `path`,
//! `http.response.trailers` for `headers` and `more_trailers`. A lookup of each in the message dict
//! costs about 120 instructions, as many for a key the message lacks (`trailers`, `more_body` are
//! mostly left out). A message is a dict of two or three entries whose keys are strings of the
//! application's code, interned as the server's are: one pass over the entries, comparing
//! pointers, finds them all for about half as much.

use std::ptr;

use pyo3::exceptions::PyKeyError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

/// A key of a response message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Type,
    Status,
    Headers,
    Trailers,
    Body,
    MoreBody,
    Path,
    MoreTrailers,
}

/// How many keys there are.
const KEYS: usize = 8;

impl Key {
    const ALL: [Self; KEYS] = [
        Self::Type,
        Self::Status,
        Self::Headers,
        Self::Trailers,
        Self::Body,
        Self::MoreBody,
        Self::Path,
        Self::MoreTrailers,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Status => "status",
            Self::Headers => "headers",
            Self::Trailers => "trailers",
            Self::Body => "body",
            Self::MoreBody => "more_body",
            Self::Path => "path",
            Self::MoreTrailers => "more_trailers",
        }
    }

    /// The key whose string `key` is, not one of the interned strings: by its text.
    fn by_text(key: &Bound<'_, PyAny>) -> Option<Self> {
        let text = key.cast::<PyString>().ok()?;
        let text = text.to_str().ok()?;
        Self::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// The interned strings of the keys, in the order of [`Key::ALL`].
fn interned_keys(py: Python<'_>) -> &[Py<PyString>; KEYS] {
    static INTERNED: PyOnceLock<[Py<PyString>; KEYS]> = PyOnceLock::new();
    INTERNED.get_or_init(py, || Key::ALL.map(|key| PyString::intern(py, key.name()).unbind()))
}

/// The keys of one message.
pub(crate) struct MessageFields<'a, 'py> {
    message: &'a Bound<'py, PyAny>,
    /// The values of a `dict` message, read in one pass; `None` for another mapping (a dict
    /// subclass included), which is asked key by key.
    values: Option<[Option<Bound<'py, PyAny>>; KEYS]>,
}

impl<'a, 'py> MessageFields<'a, 'py> {
    /// Read `message`: at once if it is a `dict` (not a subclass, whose lookups may differ).
    pub(crate) fn read(message: &'a Bound<'py, PyAny>) -> Self {
        let py = message.py();
        if message.cast_exact::<PyDict>().is_err() {
            return Self { message, values: None };
        }
        let interned = interned_keys(py);
        let mut values: [Option<Bound<'py, PyAny>>; KEYS] = Default::default();
        let (mut position, mut key, mut value) = (0, ptr::null_mut(), ptr::null_mut());
        // SAFETY: `message` is a dict; `PyDict_Next` lends its key and value, the value made an
        // owned reference before the next step. No Python code runs during the pass (a key is
        // compared as a pointer, or as the text of a `str`), so the dict does not change.
        unsafe {
            while ffi::PyDict_Next(message.as_ptr(), &raw mut position, &raw mut key, &raw mut value) != 0 {
                let found = match interned.iter().position(|k| ptr::eq(k.as_ptr(), key)) {
                    Some(index) => Some(Key::ALL[index]),
                    None => Key::by_text(&Bound::from_borrowed_ptr(py, key)),
                };
                if let Some(found) = found {
                    values[found as usize] = Some(Bound::from_borrowed_ptr(py, value));
                }
            }
        }
        Self { message, values: Some(values) }
    }

    /// `message.get(key)`.
    pub(crate) fn get(&self, key: Key) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.values {
            Some(values) => Ok(values[key as usize].clone()),
            None => {
                let py = self.message.py();
                optional(self.message, interned_keys(py)[key as usize].bind(py))
            }
        }
    }

    /// `message[key]`: a `KeyError` if the message lacks it.
    pub(crate) fn require(&self, key: Key) -> PyResult<Bound<'py, PyAny>> {
        match &self.values {
            Some(values) => values[key as usize].clone().ok_or_else(|| PyKeyError::new_err(key.name())),
            None => {
                let py = self.message.py();
                self.message.get_item(interned_keys(py)[key as usize].bind(py))
            }
        }
    }
}

/// `message.get(key)`, for dicts and other mappings.
fn optional<'py>(message: &Bound<'py, PyAny>, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(dict) = message.cast::<PyDict>() {
        return dict.get_item(key);
    }
    let value = message.call_method1(intern!(message.py(), "get"), (key,))?;
    Ok((!value.is_none()).then_some(value))
}
