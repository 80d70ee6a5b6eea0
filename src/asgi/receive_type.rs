//! The Python type of `receive`, `tricorn._tricorn.Receive`, made from C slots.
//!
//! One is made and freed for every request. As a pyo3 class its creation and deallocation went
//! through pyo3's initializer and its `unsendable` thread check; this type is a [`ThreadOwned`]
//! `Receive` called by vectorcall (PEP 590), usable on the thread that made it only.

use std::ffi::c_void;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use super::c_slots;
use super::channels::Receive;
use super::thread_owned::{ThreadOwned, VECTORCALL_MEMBERS};

/// The type, made once.
static RECEIVE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `receive` object for the application.
pub(crate) fn new_receive(py: Python<'_>, receive: Receive) -> PyResult<Bound<'_, PyAny>> {
    ThreadOwned::create(receive_type(py)?.bind(py), call, receive)
}

/// The type, for the module to export.
pub(crate) fn receive_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    RECEIVE_TYPE.get_or_try_init(py, || {
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: ThreadOwned::<Receive>::dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_call, pfunc: ffi::PyVectorcall_Call as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_members, pfunc: (&raw const VECTORCALL_MEMBERS.0).cast_mut().cast() },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"`receive()`: the ASGI messages of one request.".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot::default(),
        ];
        // SAFETY: the slot functions have the signatures of their slots; the member definitions,
        // which CPython keeps pointing at, are static.
        let created = unsafe {
            c_slots::new_type(
                py,
                c"tricorn._tricorn.Receive",
                size_of::<ThreadOwned<Receive>>(),
                ffi::Py_TPFLAGS_HAVE_VECTORCALL | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
                &mut slots,
            )
        }?;
        Ok(created.unbind())
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
