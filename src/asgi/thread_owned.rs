//! The layout of the Python objects, made from C slots, that own a Rust value of the event
//! loop's thread and are called by vectorcall (PEP 590): `send` and `receive`.
//!
//! Such a value holds `Rc`s of the event loop's thread, so every entry point checks that it runs
//! on the thread that made the object, as pyo3's `unsendable` classes do: elsewhere a call raises
//! and a deallocation leaks what the object holds rather than touching it.

use std::ffi::{CStr, c_void};
use std::mem::{ManuallyDrop, offset_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::c_slots::{self, Definitions};

/// An object owning a `T`.
#[repr(C)]
pub(crate) struct ThreadOwned<T> {
    ob_base: ffi::PyObject,
    /// Where `tp_vectorcall_offset` points: the type's call.
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The thread that made the object, the only one that may use `value`.
    thread: libc::pthread_t,
    value: ManuallyDrop<T>,
}

/// `__vectorcalloffset__`: where CPython finds the call in each object (the same for every `T`:
/// the fields before `value` do not depend on it).
static VECTORCALL_MEMBERS: Definitions<[ffi::PyMemberDef; 2]> = Definitions([
    ffi::PyMemberDef {
        name: c"__vectorcalloffset__".as_ptr(),
        type_code: ffi::Py_T_PYSSIZET,
        #[allow(clippy::cast_possible_wrap)]
        offset: offset_of!(ThreadOwned<()>, vectorcall) as ffi::Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: ptr::null(),
    },
    ffi::PyMemberDef { name: ptr::null(), type_code: 0, offset: 0, flags: 0, doc: ptr::null() },
]);

impl<T> ThreadOwned<T> {
    /// The type `name` (documented by `doc`) of objects holding a `T`, called by vectorcall.
    pub(crate) fn new_type<'py>(
        py: Python<'py>,
        name: &'static CStr,
        doc: &'static CStr,
    ) -> PyResult<Bound<'py, PyType>> {
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: Self::dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_call, pfunc: ffi::PyVectorcall_Call as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_members, pfunc: (&raw const VECTORCALL_MEMBERS.0).cast_mut().cast() },
            ffi::PyType_Slot { slot: ffi::Py_tp_doc, pfunc: doc.as_ptr() as *mut c_void },
            ffi::PyType_Slot::default(),
        ];
        // SAFETY: `dealloc` and `PyVectorcall_Call` have the signatures of their slots; the member
        // definitions and the doc, which CPython keeps pointing at, are static.
        unsafe {
            c_slots::new_type(
                py,
                name,
                size_of::<Self>(),
                ffi::Py_TPFLAGS_HAVE_VECTORCALL | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
                &mut slots,
            )
        }
    }

    /// A new object of `object_type` (whose instances are `ThreadOwned<T>`) holding `value`,
    /// called through `call`.
    pub(crate) fn create<'py>(
        object_type: &Bound<'py, PyType>,
        call: ffi::vectorcallfunc,
        value: T,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: instances of `object_type` have the layout of `Self`; `PyType_GenericAlloc`
        // returns zeroed memory with the object header set, and each field is written before
        // the object is handed out.
        unsafe {
            let object = ffi::PyType_GenericAlloc(object_type.as_type_ptr(), 0);
            if object.is_null() {
                return Err(PyErr::fetch(object_type.py()));
            }
            let fields = object.cast::<Self>();
            (&raw mut (*fields).vectorcall).write(Some(call));
            (&raw mut (*fields).thread).write(libc::pthread_self());
            (&raw mut (*fields).value).write(ManuallyDrop::new(value));
            Ok(Bound::from_owned_ptr(object_type.py(), object))
        }
    }

    /// The object's value if the calling thread made it, else a `RuntimeError` naming `what`.
    ///
    /// # Safety
    /// `object` is a live object made by [`ThreadOwned::create`] with this `T`.
    pub(crate) unsafe fn value<'a>(object: *mut ffi::PyObject, what: &str) -> PyResult<&'a T> {
        // SAFETY: per the function's contract.
        unsafe {
            let fields = object.cast::<Self>();
            if libc::pthread_equal((*fields).thread, libc::pthread_self()) == 0 {
                return Err(PyRuntimeError::new_err(format!("{what} must be called on the event loop's thread")));
            }
            Ok(&(*fields).value)
        }
    }

    /// `tp_dealloc`: drop the value (on its own thread), free the memory, release the type.
    pub(crate) unsafe extern "C" fn dealloc(object: *mut ffi::PyObject) {
        // SAFETY: CPython deallocates a live instance of the heap type once, holding the GIL.
        unsafe {
            let fields = object.cast::<Self>();
            if libc::pthread_equal((*fields).thread, libc::pthread_self()) != 0 {
                Python::attach(|_| {
                    if catch_unwind(AssertUnwindSafe(|| ManuallyDrop::drop(&mut (*fields).value))).is_err() {
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
}
