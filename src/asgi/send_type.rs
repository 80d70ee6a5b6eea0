//! The Python type of `send`, `tricorn._tricorn.Send`, made from C slots.
//!
//! An application calls `send` twice or more per request. As a pyo3 class with `__call__`, each
//! call went through `tp_call`: CPython packed the message into a tuple, pyo3 unpacked it, checked
//! the thread and the borrow, and freed the tuple. This type takes the call by vectorcall (PEP
//! 590): the message arrives as a pointer in an array, and the call is a C function call.
//!
//! The object is a [`ThreadOwned`] `Send`: usable on the thread that made it only.

use pyo3::Borrowed;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use super::c_slots;
use super::channels::Send;
use super::thread_owned::ThreadOwned;

/// The type, made once.
static SEND_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `send` object for the application.
pub(crate) fn new_send(py: Python<'_>, send: Send) -> PyResult<Bound<'_, PyAny>> {
    ThreadOwned::create(send_type(py)?.bind(py), call, send)
}

/// The type, for the module to export.
pub(crate) fn send_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    SEND_TYPE.get_or_try_init(py, || {
        let doc = c"`send(message)`: the ASGI messages of one response.";
        Ok(ThreadOwned::<Send>::new_type(py, c"tricorn._tricorn.Send", doc)?.unbind())
    })
}

/// The object's `Send` if the calling thread made it, else a `RuntimeError`.
///
/// # Safety
/// `object` is a live `Send` object.
unsafe fn own_send<'a>(object: *mut ffi::PyObject) -> PyResult<&'a Send> {
    // SAFETY: per the function's contract.
    unsafe { ThreadOwned::value(object, "send()") }
}

/// Tell `object`, if it is a `Send`, that the application returned (`returned`) or failed;
/// whether it is one.
pub(crate) fn finish(object: &Bound<'_, PyAny>, returned: bool) -> PyResult<bool> {
    let py = object.py();
    // SAFETY: `object` is a live object, whose type is live.
    if !std::ptr::eq(unsafe { ffi::Py_TYPE(object.as_ptr()) }, send_type(py)?.bind(py).as_type_ptr()) {
        return Ok(false);
    }
    // SAFETY: `object` is a live `Send` object.
    let send = unsafe { own_send(object.as_ptr()) }?;
    send.finish(py, returned);
    Ok(true)
}

/// `send(message)`, by vectorcall.
unsafe extern "C" fn call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    c_slots::raising("send()", |py| {
        // SAFETY: Python passes `callable` (a `Send` object) and `nargs` live arguments followed
        // by one per name in `kwnames`.
        unsafe {
            let nargs = ffi::PyVectorcall_NARGS(nargsf);
            if nargs != 1 || (!kwnames.is_null() && ffi::PyTuple_GET_SIZE(kwnames) != 0) {
                return Err(PyTypeError::new_err("send() takes exactly one argument, the message"));
            }
            let message = Borrowed::from_ptr(py, *args);
            Ok(own_send(callable)?.call(py, &message)?.into_ptr())
        }
    })
}
