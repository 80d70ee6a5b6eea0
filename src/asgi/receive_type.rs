//! The Python type of `receive`, `tricorn._tricorn.Receive`, made from C slots.
//!
//! One is made and freed for every request. As a pyo3 class its creation and deallocation went
//! through pyo3's initializer and its `unsendable` thread check; this type is a [`ThreadOwned`]
//! `Receive` called by vectorcall (PEP 590), usable on the thread that made it only.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use super::c_slots;
use super::channels::Receive;
use super::thread_owned::ThreadOwned;

/// The type, made once.
static RECEIVE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `receive` object for the application.
pub(crate) fn new_receive(py: Python<'_>, receive: Receive) -> PyResult<Bound<'_, PyAny>> {
    ThreadOwned::create(receive_type(py)?.bind(py), call, receive)
}

/// The type, for the module to export.
pub(crate) fn receive_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    RECEIVE_TYPE.get_or_try_init(py, || {
        let doc = c"`receive()`: the ASGI messages of one request.";
        Ok(ThreadOwned::<Receive>::new_type(py, c"tricorn._tricorn.Receive", doc)?.unbind())
    })
}

/// `receive()`, by vectorcall.
unsafe extern "C" fn call(
    callable: *mut ffi::PyObject,
    _args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    c_slots::raising("receive()", |py| {
        // SAFETY: Python passes `callable` (a `Receive` object) and the arguments' count and names.
        unsafe {
            if ffi::PyVectorcall_NARGS(nargsf) != 0 || (!kwnames.is_null() && ffi::PyTuple_GET_SIZE(kwnames) != 0) {
                return Err(PyTypeError::new_err("receive() takes no arguments"));
            }
            Ok(ThreadOwned::<Receive>::value(callable, "receive()")?.call(py)?.into_ptr())
        }
    })
}
