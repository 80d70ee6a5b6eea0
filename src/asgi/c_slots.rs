//! Python types and methods made from C slots rather than as pyo3 classes, where pyo3's call
//! wrapper would cost more than the work of the call (`Done`, `Send`, `AppCall`, the loops'
//! `call_soon`, the registry of tasks' `add`).

use std::ffi::{CStr, c_int, c_uint};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Definitions CPython keeps pointing at for the life of a type or method (`PyMethodDef`,
/// `PyMemberDef`): kept in statics.
pub(crate) struct Definitions<T>(pub(crate) T);

// SAFETY: the definitions are immutable and their pointers are to static data.
unsafe impl<T> Sync for Definitions<T> {}

/// A new type named `name` whose objects take `basicsize` bytes, with `flags` besides
/// `Py_TPFLAGS_DEFAULT` and `slots` (ending with a zeroed slot).
///
/// # Safety
/// The slot functions have the signatures of their slots; what the slots point at (method and
/// member definitions) lives as long as the type.
pub(crate) unsafe fn new_type<'py>(
    py: Python<'py>,
    name: &'static CStr,
    basicsize: usize,
    flags: std::ffi::c_ulong,
    slots: &mut [ffi::PyType_Slot],
) -> PyResult<Bound<'py, PyType>> {
    let mut spec = ffi::PyType_Spec {
        // Static: Python 3.11 keeps pointing at the name given here.
        name: name.as_ptr(),
        basicsize: c_int::try_from(basicsize).expect("an object's size fits a C int"),
        itemsize: 0,
        flags: c_uint::try_from(ffi::Py_TPFLAGS_DEFAULT | flags).expect("type flags fit a C unsigned int"),
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the spec and its slots are valid for the call, which copies what it keeps but the
    // name (static) and what the caller vouches for.
    let created = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&raw mut spec)) }?;
    Ok(created.cast_into::<PyType>()?)
}

/// The built-in function of `definition`, bound to `target` (its first argument on every call),
/// which it holds.
pub(crate) fn bound_function<'py>(
    definition: &'static Definitions<ffi::PyMethodDef>,
    target: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `target` is a live object; the definition is static and never written.
    unsafe {
        Bound::from_owned_ptr_or_err(
            target.py(),
            ffi::PyCMethod_New((&raw const definition.0).cast_mut(), target.as_ptr(), ptr::null_mut(), ptr::null_mut()),
        )
    }
}

/// Run `body`, the work of a C function Python called (`what` names it), with the GIL marked as
/// held for pyo3, turning an error or a panic into a raised exception (NULL).
pub(crate) fn raising(what: &str, body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    Python::attach(|py| match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => {
            error.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            PyRuntimeError::new_err(format!("internal error in {what}")).restore(py);
            ptr::null_mut()
        }
    })
}

/// `__await__` and `__iter__` of an object that is its own iterator: the object itself.
pub(crate) unsafe extern "C" fn same_object(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: Python passes a live object and takes the returned reference.
    unsafe { ffi::Py_INCREF(slf) };
    slf
}
