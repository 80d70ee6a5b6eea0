//! Awaitables handed to the application by `receive()` and `send()`.
//!
//! Most calls complete at once (the body is buffered, the send fits in the buffer), so they
//! return an object that finishes on its first step instead of an `asyncio.Future`: no loop
//! round trip, no callback. Only a call that must wait returns a real future from the loop.

use std::ffi::c_void;
use std::ptr;

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use super::c_slots;

/// The type of [`done`]: `tricorn._tricorn.Done`.
static DONE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// The one instance of it.
static DONE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// An awaitable already done with `None`; stateless, so one instance serves every `send()`.
///
/// Its type is made from C slots rather than as a pyo3 class: each `await` of it calls two of
/// them (`__await__`, then `__next__`), whose whole work is a reference count, and pyo3's
/// trampoline around each (GIL bookkeeping, panic guard) costs about 80 instructions.
pub(crate) fn done(py: Python<'_>) -> PyResult<Py<PyAny>> {
    DONE.get_or_try_init(py, || {
        let done_type = done_type(py)?.bind(py);
        // SAFETY: `done_type` is a live type object made by `PyType_FromSpec`; an instance of a
        // type with no fields of its own needs no initialisation after `PyType_GenericAlloc`.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(done_type.as_type_ptr(), 0)) }
            .map(Bound::unbind)
    })
    .map(|done| done.clone_ref(py))
}

/// The type of [`done`], for the module to export.
pub(crate) fn done_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    DONE_TYPE.get_or_try_init(py, || {
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_am_await, pfunc: c_slots::same_object as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iter, pfunc: c_slots::same_object as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iternext, pfunc: exhausted as *mut c_void },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"An awaitable that is already done with `None`.".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot::default(),
        ];
        // SAFETY: the slot functions have the signatures of their slots.
        let created = unsafe {
            c_slots::new_type(
                py,
                c"tricorn._tricorn.Done",
                size_of::<ffi::PyObject>(),
                ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
                &mut slots,
            )
        }?;
        Ok(created.unbind())
    })
}

/// `__next__`: NULL with no exception set, which ends the iteration (and the `await`) with `None`.
unsafe extern "C" fn exhausted(_slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    ptr::null_mut()
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
