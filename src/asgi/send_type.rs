//! The Python type of `send`, `tricorn._tricorn.Send`, made from C slots.
//!
//! An application calls `send` twice or more per request. As a pyo3 class with `__call__`, each
//! call went through `tp_call`: CPython packed the message into a tuple, pyo3 unpacked it, checked
//! the thread and the borrow, and freed the tuple. This type takes the call by vectorcall (PEP
//! 590): the message arrives as a pointer in an array, and the call is a C function call.
//!
//! A `Send` holds `Rc`s of the event loop's thread, so every entry point checks that it runs on
//! the thread that made the object, as pyo3's `unsendable` classes do: elsewhere a call raises
//! and a deallocation leaks what the object holds rather than touching it.

use std::ffi::c_void;
use std::mem::{ManuallyDrop, offset_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::{Borrowed, PyErr};

use super::c_slots::{self, Definitions};
use super::channels::Send;

/// The type, made once.
static SEND_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `app_returned()` and `app_failed(exc)`.
static METHODS: Definitions<[ffi::PyMethodDef; 3]> = Definitions([
    ffi::PyMethodDef {
        ml_name: c"app_returned".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: app_returned },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"Called by the task wrapper when the application returned.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"app_failed".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: app_failed },
        ml_flags: ffi::METH_O,
        ml_doc: c"Called by the task wrapper when the application raised.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// `__vectorcalloffset__`: where CPython finds [`call`] in each object.
static MEMBERS: Definitions<[ffi::PyMemberDef; 2]> = Definitions([
    ffi::PyMemberDef {
        name: c"__vectorcalloffset__".as_ptr(),
        type_code: ffi::Py_T_PYSSIZET,
        #[allow(clippy::cast_possible_wrap)]
        offset: offset_of!(SendObject, vectorcall) as ffi::Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: ptr::null(),
    },
    ffi::PyMemberDef { name: ptr::null(), type_code: 0, offset: 0, flags: 0, doc: ptr::null() },
]);

/// The layout of a `Send` object.
#[repr(C)]
struct SendObject {
    ob_base: ffi::PyObject,
    /// Where `tp_vectorcall_offset` points: [`call`].
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The thread that made the object, the only one that may use [`SendObject::send`].
    thread: libc::pthread_t,
    send: ManuallyDrop<Send>,
}

/// A `send` object for the application.
pub(crate) fn new_send(py: Python<'_>, send: Send) -> PyResult<Bound<'_, PyAny>> {
    let send_type = send_type(py)?.bind(py);
    // SAFETY: `send_type` is a live type whose instances have the layout of `SendObject`;
    // `PyType_GenericAlloc` returns zeroed memory with the object header set, and each field is
    // written before the object is handed out.
    unsafe {
        let object = ffi::PyType_GenericAlloc(send_type.as_type_ptr(), 0);
        if object.is_null() {
            return Err(PyErr::fetch(py));
        }
        let fields = object.cast::<SendObject>();
        (&raw mut (*fields).vectorcall).write(Some(call));
        (&raw mut (*fields).thread).write(libc::pthread_self());
        (&raw mut (*fields).send).write(ManuallyDrop::new(send));
        Ok(Bound::from_owned_ptr(py, object))
    }
}

/// The type, for the module to export.
pub(crate) fn send_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    SEND_TYPE.get_or_try_init(py, || {
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_call, pfunc: ffi::PyVectorcall_Call as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: (&raw const METHODS.0).cast_mut().cast() },
            ffi::PyType_Slot { slot: ffi::Py_tp_members, pfunc: (&raw const MEMBERS.0).cast_mut().cast() },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"`send(message)`: the ASGI messages of one response.".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot::default(),
        ];
        // SAFETY: the slot functions have the signatures of their slots; the method and member
        // definitions, which CPython keeps pointing at, are static.
        let created = unsafe {
            c_slots::new_type(
                py,
                c"tricorn._tricorn.Send",
                size_of::<SendObject>(),
                ffi::Py_TPFLAGS_HAVE_VECTORCALL | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
                &mut slots,
            )
        }?;
        Ok(created.unbind())
    })
}

/// The object's `Send` if the calling thread made it, else a `RuntimeError`.
///
/// # Safety
/// `object` is a live `Send` object.
unsafe fn own_send<'a>(object: *mut ffi::PyObject) -> PyResult<&'a Send> {
    // SAFETY: per the function's contract.
    unsafe {
        let fields = object.cast::<SendObject>();
        if libc::pthread_equal((*fields).thread, libc::pthread_self()) == 0 {
            return Err(PyRuntimeError::new_err("send() must be called on the event loop's thread"));
        }
        Ok(&(*fields).send)
    }
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

/// `send.app_returned()`.
unsafe extern "C" fn app_returned(object: *mut ffi::PyObject, _unused: *mut ffi::PyObject) -> *mut ffi::PyObject {
    c_slots::raising("send()", |py| {
        // SAFETY: CPython calls a method with a live instance of its type.
        unsafe { own_send(object)? }.app_returned(py);
        // SAFETY: `None` is immortal or held by the interpreter.
        Ok(unsafe { ffi::Py_NewRef(ffi::Py_None()) })
    })
}

/// `send.app_failed(exc)`.
unsafe extern "C" fn app_failed(object: *mut ffi::PyObject, _exc: *mut ffi::PyObject) -> *mut ffi::PyObject {
    c_slots::raising("send()", |py| {
        // SAFETY: CPython calls a method with a live instance of its type.
        unsafe { own_send(object)? }.app_failed(py);
        // SAFETY: `None` is immortal or held by the interpreter.
        Ok(unsafe { ffi::Py_NewRef(ffi::Py_None()) })
    })
}

/// `tp_dealloc`: drop the `Send` (on its own thread), free the memory, release the type.
unsafe extern "C" fn dealloc(object: *mut ffi::PyObject) {
    // SAFETY: CPython deallocates a live instance of this heap type once, holding the GIL.
    unsafe {
        let fields = object.cast::<SendObject>();
        if libc::pthread_equal((*fields).thread, libc::pthread_self()) != 0 {
            Python::attach(|_| {
                if catch_unwind(AssertUnwindSafe(|| ManuallyDrop::drop(&mut (*fields).send))).is_err() {
                    ffi::PyErr_WriteUnraisable(object);
                }
            });
        }
        let object_type = ffi::Py_TYPE(object);
        if let Some(free) = (*object_type).tp_free {
            free(object.cast());
        }
        ffi::Py_DECREF(object_type.cast());
    }
}
