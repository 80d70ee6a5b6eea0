//! Awaitables handed to the application by `receive()` and `send()`.
//!
//! Most calls complete at once (the body is buffered, the send fits in the buffer), so they
//! return an object that finishes on its first step instead of an `asyncio.Future`: no loop
//! round trip, no callback. Only a call that must wait returns a real future from the loop.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// An awaitable already done with `None`; stateless, so one instance serves every `send()`.
#[pyclass(module = "tricorn._tricorn", frozen)]
pub(crate) struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }
}

/// An awaitable already done with a value (a `receive()` message).
#[pyclass(module = "tricorn._tricorn", freelist = 64)]
pub(crate) struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub(crate) fn new(value: Py<PyAny>) -> Self {
        Self { value: Some(value) }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self) -> PyResult<Option<()>> {
        match self.value.take() {
            Some(value) => Err(PyStopIteration::new_err((value,))),
            None => Ok(None),
        }
    }
}
