//! Python 3.10 and 3.11: a request task takes its first step as it is created, as
//! `asyncio.Task(..., eager_start=True)` does from Python 3.12 on.
//!
//! Before 3.12 `asyncio.Task.__init__` always schedules the task's first step with
//! `loop.call_soon(step, context=...)`: a handle in the loop's ready queue, run at the loop's next
//! iteration. For an application that answers without waiting (a response from memory) that
//! round trip is most of the task's cost. The event loops the server makes itself (`--loop
//! uvloop` and `--loop asyncio`, see `tricorn.loops`) are subclasses whose `call_soon` is
//! [`call_soon`] below: it runs the step at once, in the task's context, when it is the first
//! step of a request task the server is creating, and hands every other call to the loop class's
//! own `call_soon`.
//!
//! What the application sees is what 3.12's eager start gives it: its first step runs with
//! `asyncio.current_task()` set and in its own context, before the server reads the next request.
//! One difference: the task joins `asyncio.all_tasks()` when `Task.__init__` returns, that is
//! after its first step.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The loop whose next `call_soon` is the first step of the request task being created, if any.
static FIRST_STEP_LOOP: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// A first step is running: a task created within it is scheduled as usual (Python 3.11 cannot
/// enter a task while another one runs).
static STEPPING: AtomicBool = AtomicBool::new(false);

/// `call_soon`'s method definition; CPython only reads it.
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is immutable and its pointers are to static data.
unsafe impl Sync for MethodDef {}

static CALL_SOON: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"call_soon".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: call_soon },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"call_soon(callback, *args, context=None)\n--\n\nThe loop's `call_soon`; the first step of a request task being created runs at once.".as_ptr(),
});

/// The `call_soon` method to give a subclass of `loop_type`.
#[pyfunction]
pub(crate) fn first_step_call_soon(loop_type: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    let py = loop_type.py();
    // SAFETY: `loop_type` is a live type; the method definition is static and never written.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyDescr_NewMethod(loop_type.as_type_ptr(), (&raw const CALL_SOON.0).cast_mut()),
        )
    }
    .map(Bound::unbind)
}

/// Whether `event_loop`'s class takes [`call_soon`] as its `call_soon`.
pub(crate) fn runs_first_steps(event_loop: &Bound<'_, PyAny>) -> PyResult<bool> {
    let method = event_loop.get_type().getattr(intern!(event_loop.py(), "call_soon"))?;
    // SAFETY: `method` is a live object; its layout is read only once its type says it is a
    // method descriptor.
    Ok(unsafe {
        ptr::eq(ffi::Py_TYPE(method.as_ptr()), &raw mut ffi::PyMethodDescr_Type)
            && ptr::eq((*method.as_ptr().cast::<ffi::PyMethodDescrObject>()).d_method, &raw const CALL_SOON.0)
    })
}

/// Run `create`, which creates a task on `event_loop`: the task's first step runs within it
/// unless another first step is running.
pub(crate) fn with_first_step<T>(event_loop: &Bound<'_, PyAny>, create: impl FnOnce() -> T) -> T {
    if STEPPING.load(Ordering::Relaxed) {
        return create();
    }
    FIRST_STEP_LOOP.store(event_loop.as_ptr(), Ordering::Relaxed);
    let created = create();
    // Cleared here too in case `Task.__init__` failed before its `call_soon`.
    FIRST_STEP_LOOP.store(ptr::null_mut(), Ordering::Relaxed);
    created
}

/// `loop.call_soon(callback, *args, context=None)`.
unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: Python calls this with the GIL held, `args` holding `nargs` positional arguments
    // followed by one value per name in `kwnames` (NULL or a tuple of strings).
    unsafe {
        if FIRST_STEP_LOOP.load(Ordering::Relaxed) == slf
            && nargs == 1
            && !kwnames.is_null()
            && ffi::PyTuple_GET_SIZE(kwnames) == 1
        {
            FIRST_STEP_LOOP.store(ptr::null_mut(), Ordering::Relaxed);
            let context = *args.add(1);
            if ffi::PyContext_CheckExact(context) != 0 {
                return run_in_context(*args, context);
            }
        }
        call_base(slf, args, nargs, kwnames)
    }
}

/// `context.run(step)`, returning `None` in place of the handle `call_soon` would return.
///
/// # Safety
/// The GIL is held; `step` and `context` are live, `context` a `contextvars.Context`.
unsafe fn run_in_context(step: *mut ffi::PyObject, context: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the function's contract.
    unsafe {
        if ffi::PyContext_Enter(context) < 0 {
            return ptr::null_mut();
        }
        STEPPING.store(true, Ordering::Relaxed);
        let result = ffi::PyObject_CallNoArgs(step);
        STEPPING.store(false, Ordering::Relaxed);
        if ffi::PyContext_Exit(context) < 0 {
            ffi::Py_XDECREF(result);
            return ptr::null_mut();
        }
        if result.is_null() {
            return result;
        }
        ffi::Py_DECREF(result);
        ffi::Py_NewRef(ffi::Py_None())
    }
}

/// The `call_soon` of the class the loop's class derives from, with the same arguments.
///
/// # Safety
/// As for [`call_soon`].
unsafe fn call_base(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: per the function's contract; the loop's type and its base are live while the loop is.
    unsafe {
        let py = Python::assume_attached();
        let base = (*ffi::Py_TYPE(slf)).tp_base.cast::<ffi::PyObject>();
        let method = ffi::PyObject_GetAttr(base, intern!(py, "call_soon").as_ptr());
        if method.is_null() {
            return method;
        }
        let keywords = if kwnames.is_null() { 0 } else { ffi::PyTuple_GET_SIZE(kwnames) };
        let count = usize::try_from(nargs + keywords).unwrap_or(0);
        let mut stack = Vec::with_capacity(count + 1);
        stack.push(slf);
        stack.extend_from_slice(std::slice::from_raw_parts(args, count));
        let result = ffi::PyObject_Vectorcall(method, stack.as_ptr(), (nargs + 1) as usize, kwnames);
        ffi::Py_DECREF(method);
        result
    }
}
