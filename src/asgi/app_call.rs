//! The coroutine each request task runs, `tricorn._tricorn.AppCall`: one call of the
//! application, stepped from C, whose outcome it reports to the request's `send`.
//!
//! The task could run a Python coroutine that awaits the application and reports what it did
//! (`send.app_returned()`, or the traceback and `send.app_failed(exc)`). That coroutine is a
//! frame of its own that every step of the request goes through. This object takes its place,
//! 850–950 instructions a request fewer (3–4 % of a hello world): `asyncio.Task` steps it with
//! `PyIter_Send` (its `am_send` slot), which steps the application's coroutine with
//! `PyIter_Send` in turn, and the outcome is handled here, in Rust.
//!
//! As in `await app(scope, receive, send)`, the application is called at the first step, in the
//! task's context, and any exception it raises (even from the call) is logged with its
//! traceback and ends the response with a 500 or a closed stream; an `Exception` ends the task
//! there, any other `BaseException` (`CancelledError`, `KeyboardInterrupt`, `SystemExit`) goes
//! on to the task. It passes for a coroutine (`send`, `throw`, `close`, `__await__`, so
//! `asyncio.iscoroutine` accepts it) and hands the application's coroutine's attributes
//! (`cr_frame`, `cr_running`, `__qualname__`...) to whoever inspects the task.

use std::ffi::{c_int, c_void};
use std::ptr;

use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::ffi::PySendResult;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use super::c_slots::{self, Definitions};
use super::send_type;
use super::websocket::WsSend;
use crate::server::{log_error, log_exception};

/// The type, made once.
static APP_CALL_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// One call of the application.
#[repr(C)]
struct AppCall {
    ob_base: ffi::PyObject,
    /// The application and its arguments, until the first step calls it (then NULL but `send`).
    app: *mut ffi::PyObject,
    scope: *mut ffi::PyObject,
    receive: *mut ffi::PyObject,
    send: *mut ffi::PyObject,
    /// `tricorn.error`, where a failure is logged.
    error_logger: *mut ffi::PyObject,
    /// The application's coroutine (or its awaitable's iterator), from the first step on.
    coroutine: *mut ffi::PyObject,
    /// A step, `throw()` or `close()` is under way (the application's code runs).
    running: bool,
    /// The outcome was reported to `send`.
    finished: bool,
}

/// `send(value)`, `throw(exception)` and `close()`.
static METHODS: Definitions<[ffi::PyMethodDef; 4]> = Definitions([
    ffi::PyMethodDef {
        ml_name: c"send".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: send_method },
        ml_flags: ffi::METH_O,
        ml_doc: c"Step the application's coroutine with `value`.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"throw".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionWithKeywords: throw_method },
        ml_flags: ffi::METH_VARARGS | ffi::METH_KEYWORDS,
        ml_doc: c"Raise an exception in the application's coroutine.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"close".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: close_method },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"Close the application's coroutine; the response ends as if it had failed.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// The type, for the module to export.
pub(crate) fn app_call_type(py: Python<'_>) -> PyResult<&Py<PyType>> {
    APP_CALL_TYPE.get_or_try_init(py, || {
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_am_await, pfunc: c_slots::same_object as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_am_send, pfunc: am_send as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iter, pfunc: c_slots::same_object as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_iternext, pfunc: iternext as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: (&raw const METHODS.0).cast_mut().cast() },
            ffi::PyType_Slot { slot: ffi::Py_tp_getattro, pfunc: getattro as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_traverse, pfunc: traverse as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_clear, pfunc: clear as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_finalize, pfunc: finalize as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: dealloc as *mut c_void },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"One call of the ASGI application, the coroutine of a request's task.".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot::default(),
        ];
        // SAFETY: the slot functions have the signatures of their slots; the method table and
        // the doc are static.
        let created = unsafe {
            c_slots::new_type(
                py,
                c"tricorn._tricorn.AppCall",
                size_of::<AppCall>(),
                ffi::Py_TPFLAGS_HAVE_GC | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
                &mut slots,
            )
        }?;
        Ok(created.unbind())
    })
}

/// `app(scope, receive, send)`, to run as a request's task: the call is made at its first step.
pub(crate) fn new_app_call<'py>(
    app: &Bound<'py, PyAny>,
    (scope, receive, send): (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>),
    error_logger: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = app.py();
    let call_type = app_call_type(py)?.bind(py);
    // SAFETY: instances of the type have the layout of `AppCall`; `PyType_GenericAlloc` returns
    // zeroed memory with the header set (and tracked by the collector), and every field is
    // written before the object is handed out.
    unsafe {
        let object = ffi::PyType_GenericAlloc(call_type.as_type_ptr(), 0);
        if object.is_null() {
            return Err(PyErr::fetch(py));
        }
        let call = object.cast::<AppCall>();
        (*call).app = app.clone().into_ptr();
        (*call).scope = scope.into_ptr();
        (*call).receive = receive.into_ptr();
        (*call).send = send.into_ptr();
        (*call).error_logger = error_logger.clone().into_ptr();
        Ok(Bound::from_owned_ptr(py, object))
    }
}

/// `am_send`: `asyncio.Task`'s step.
unsafe extern "C" fn am_send(
    slf: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> PySendResult {
    // SAFETY: Python passes a live `AppCall`, a live value and where to put the result, holding
    // the GIL.
    unsafe { step(Python::assume_attached(), slf.cast(), value, result) }
}

/// Step the application with `value`: started first if need be; the outcome reported once it
/// is known.
///
/// # Safety
/// `call` is a live `AppCall`, `value` a live object, `result` writable; the GIL is held.
unsafe fn step(
    py: Python<'_>,
    call: *mut AppCall,
    value: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> PySendResult {
    // SAFETY: per the function's contract.
    unsafe {
        *result = ptr::null_mut();
        if (*call).finished {
            PyRuntimeError::new_err("cannot reuse already awaited coroutine").restore(py);
            return PySendResult::PYGEN_ERROR;
        }
        if let Err(err) = enter(call) {
            err.restore(py);
            return PySendResult::PYGEN_ERROR;
        }
        let started = if (*call).coroutine.is_null() { start(py, call) } else { Ok(()) };
        let status = match started {
            Ok(()) => ffi::PyIter_Send((*call).coroutine, value, result),
            Err(err) => {
                err.restore(py);
                PySendResult::PYGEN_ERROR
            }
        };
        (*call).running = false;
        match status {
            PySendResult::PYGEN_NEXT => PySendResult::PYGEN_NEXT,
            PySendResult::PYGEN_RETURN => {
                returned(py, call, Bound::from_owned_ptr(py, *result));
                *result = ffi::Py_NewRef(ffi::Py_None());
                PySendResult::PYGEN_RETURN
            }
            PySendResult::PYGEN_ERROR => failed(py, call, result),
        }
    }
}

/// Mark `call` running, unless it is already: a coroutine cannot be stepped, thrown into or
/// closed from its own code.
///
/// # Safety
/// `call` is a live `AppCall`.
unsafe fn enter(call: *mut AppCall) -> PyResult<()> {
    // SAFETY: per the function's contract.
    unsafe {
        if (*call).running {
            return Err(PyValueError::new_err("coroutine already executing"));
        }
        (*call).running = true;
    }
    Ok(())
}

/// Call the application: `coroutine` is what its call returned, or the iterator of the
/// awaitable it returned (`__await__()`, as `await` does).
///
/// # Safety
/// `call` is a live `AppCall` not yet started; the GIL is held.
unsafe fn start(py: Python<'_>, call: *mut AppCall) -> PyResult<()> {
    // SAFETY: per the function's contract; the fields taken are owned references.
    unsafe {
        let app = Bound::from_owned_ptr(py, std::mem::replace(&mut (*call).app, ptr::null_mut()));
        let scope = Bound::from_owned_ptr(py, std::mem::replace(&mut (*call).scope, ptr::null_mut()));
        let receive = Bound::from_owned_ptr(py, std::mem::replace(&mut (*call).receive, ptr::null_mut()));
        let send = Bound::from_borrowed_ptr(py, (*call).send);
        let awaitable = app.call1((scope, receive, send))?;
        (*call).coroutine = if ffi::PyCoro_CheckExact(awaitable.as_ptr()) != 0 {
            awaitable.into_ptr()
        } else {
            awaitable_iterator(&awaitable)?.into_ptr()
        };
        Ok(())
    }
}

/// What `await` steps for an awaitable that is not a coroutine: its `__await__()`.
fn awaitable_iterator<'py>(awaitable: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = awaitable.py();
    let not_awaitable =
        || PyTypeError::new_err(format!("object {} can't be used in 'await' expression", type_name(awaitable)));
    // SAFETY: the type of a live object is live; its async slots, when present, are valid.
    let await_slot = unsafe {
        let methods = (*ffi::Py_TYPE(awaitable.as_ptr())).tp_as_async;
        if methods.is_null() { None } else { (*methods).am_await }
    };
    let await_slot = await_slot.ok_or_else(not_awaitable)?;
    // SAFETY: the slot takes a live object of its type and returns a new reference or NULL.
    let iterator = unsafe { Bound::from_owned_ptr_or_err(py, await_slot(awaitable.as_ptr())) }?;
    // SAFETY: `iterator` is a live object.
    if unsafe { ffi::PyIter_Check(iterator.as_ptr()) } == 0 {
        return Err(PyTypeError::new_err(format!(
            "__await__() returned non-iterator of type '{}'",
            type_name(&iterator)
        )));
    }
    Ok(iterator)
}

/// The name of `object`'s type, for an error message.
fn type_name(object: &Bound<'_, PyAny>) -> String {
    object.get_type().name().map_or_else(|_| "?".to_owned(), |name| name.to_string())
}

/// The application returned `value`: a value other than `None` is logged; `send` is told.
///
/// # Safety
/// `call` is a live `AppCall`; the GIL is held.
unsafe fn returned(py: Python<'_>, call: *mut AppCall, value: Bound<'_, PyAny>) {
    // SAFETY: per the function's contract.
    unsafe {
        (*call).finished = true;
        if !value.is_none() {
            let message = format!("ASGI callable should return None, but returned '{value}'.");
            log_error(&Bound::from_borrowed_ptr(py, (*call).error_logger), &message);
        }
        report(py, call, true);
    }
}

/// The application raised the exception set: logged with its traceback, `send` told. An
/// `Exception` ends the task with `None` (`PYGEN_RETURN`); any other is raised on to the task.
///
/// # Safety
/// `call` is a live `AppCall`, `result` writable; the GIL is held.
unsafe fn failed(py: Python<'_>, call: *mut AppCall, result: *mut *mut ffi::PyObject) -> PySendResult {
    let err = PyErr::take(py).unwrap_or_else(|| PyRuntimeError::new_err("the application failed without an exception"));
    // SAFETY: per the function's contract.
    unsafe {
        (*call).finished = true;
        log_exception(&Bound::from_borrowed_ptr(py, (*call).error_logger), "Exception in ASGI application\n", &err);
        report(py, call, false);
        if err.is_instance_of::<PyException>(py) {
            *result = ffi::Py_NewRef(ffi::Py_None());
            PySendResult::PYGEN_RETURN
        } else {
            err.restore(py);
            PySendResult::PYGEN_ERROR
        }
    }
}

/// Tell `send` (an HTTP or a WebSocket one) that the application returned (`returned`) or
/// failed.
///
/// # Safety
/// `call` is a live `AppCall`; the GIL is held.
unsafe fn report(py: Python<'_>, call: *mut AppCall, returned: bool) {
    // SAFETY: per the function's contract; `send` is held until the object is cleared.
    let send = unsafe { Bound::from_borrowed_ptr(py, (*call).send) };
    let reported = send_type::finish(&send, returned).and_then(|told| {
        if !told {
            send.cast::<WsSend>()?.try_borrow_mut()?.finish(py, returned);
        }
        Ok(())
    });
    if let Err(err) = reported {
        err.write_unraisable(py, Some(&send));
    }
}

/// `send(value)`: a step; the end of the coroutine raises `StopIteration`.
unsafe extern "C" fn send_method(slf: *mut ffi::PyObject, value: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: Python calls a method with a live instance and argument, holding the GIL.
    unsafe { step_for_python(slf, value, true) }
}

/// `__next__`: a step with `None`; the end of the coroutine ends the iteration (NULL with no
/// exception set).
unsafe extern "C" fn iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: Python passes a live instance, holding the GIL.
    unsafe { step_for_python(slf, ffi::Py_None(), false) }
}

/// A step as a call from Python returns it: the value yielded, or NULL at the end (with
/// `StopIteration` set if `raise_stop`) or with the exception raised.
///
/// # Safety
/// `slf` is a live `AppCall`, `value` a live object; the GIL is held.
unsafe fn step_for_python(slf: *mut ffi::PyObject, value: *mut ffi::PyObject, raise_stop: bool) -> *mut ffi::PyObject {
    // SAFETY: per the function's contract.
    unsafe {
        let mut result = ptr::null_mut();
        match step(Python::assume_attached(), slf.cast(), value, &raw mut result) {
            PySendResult::PYGEN_NEXT => result,
            PySendResult::PYGEN_RETURN => {
                ffi::Py_DECREF(result);
                if raise_stop {
                    ffi::PyErr_SetNone(ffi::PyExc_StopIteration);
                }
                ptr::null_mut()
            }
            PySendResult::PYGEN_ERROR => ptr::null_mut(),
        }
    }
}

/// `throw(exception)` (or the older `throw(type, value, traceback)`): raised in the application's
/// coroutine, as `asyncio.Task` does to cancel it; started first if need be, so the application
/// sees the exception as it would at an `await`.
unsafe extern "C" fn throw_method(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    c_slots::raising("AppCall.throw()", |py| {
        let call = slf.cast::<AppCall>();
        // SAFETY: Python calls a method with a live instance, a tuple of arguments and a dict
        // or NULL.
        unsafe {
            let args = Bound::from_borrowed_ptr(py, args).cast_into::<PyTuple>()?;
            let kwargs = Bound::from_borrowed_ptr_or_opt(py, kwargs).map(|kwargs| kwargs.cast_into()).transpose()?;
            enter(call)?;
            let unstarted = (*call).coroutine.is_null() && !(*call).finished;
            let started = if unstarted { start(py, call) } else { Ok(()) };
            let thrown = started.and_then(|()| forward_throw(py, call, &args, kwargs.as_ref()));
            (*call).running = false;
            if (*call).finished {
                return thrown.map(Bound::into_ptr);
            }
            match thrown {
                Ok(yielded) => Ok(yielded.into_ptr()),
                Err(err) if err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    let value = err.value(py).getattr(intern!(py, "value"))?;
                    returned(py, call, value);
                    Err(pyo3::exceptions::PyStopIteration::new_err(()))
                }
                Err(err) => {
                    err.restore(py);
                    ended(py, call)
                }
            }
        }
    })
}

/// The application's coroutine's `throw(*args, **kwargs)`; with no coroutine (closed before
/// it started) or an iterator without a `throw`, the exception is raised at once, as `await`
/// does.
///
/// # Safety
/// `call` is a live `AppCall`; the GIL is held.
unsafe fn forward_throw<'py>(
    py: Python<'py>,
    call: *mut AppCall,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: per the function's contract.
    let coroutine = unsafe { Bound::from_borrowed_ptr_or_opt(py, (*call).coroutine) };
    match coroutine.and_then(|coroutine| coroutine.getattr(intern!(py, "throw")).ok()) {
        Some(throw) => throw.call(args, kwargs),
        None => {
            let first = args.get_item(0)?;
            Err(if first.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                PyErr::from_value(first)
            } else {
                PyErr::from_type(first.cast_into::<PyType>()?, args.get_item(1).ok().map(Bound::unbind))
            })
        }
    }
}

/// The outcome of a `throw()` or a `close()` as a method's result: the failure handled as
/// [`failed`] does, an `Exception` becoming the end of the coroutine (`StopIteration`).
///
/// # Safety
/// `call` is a live `AppCall` and an exception is set; the GIL is held.
unsafe fn ended(py: Python<'_>, call: *mut AppCall) -> PyResult<*mut ffi::PyObject> {
    let mut result = ptr::null_mut();
    // SAFETY: per the function's contract.
    match unsafe { failed(py, call, &raw mut result) } {
        PySendResult::PYGEN_RETURN => {
            // SAFETY: `failed` put a new reference to `None` there.
            unsafe { ffi::Py_DECREF(result) };
            Err(pyo3::exceptions::PyStopIteration::new_err(()))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

/// `close()`: the application's coroutine closed; a response it had not finished ends as if it
/// had failed (a 500 or a closed stream), with nothing logged: the application did not raise.
unsafe extern "C" fn close_method(slf: *mut ffi::PyObject, _unused: *mut ffi::PyObject) -> *mut ffi::PyObject {
    c_slots::raising("AppCall.close()", |py| {
        // SAFETY: Python calls a method with a live instance.
        unsafe { close(py, slf.cast()) }?;
        // SAFETY: `None` is immortal or held by the interpreter.
        Ok(unsafe { ffi::Py_NewRef(ffi::Py_None()) })
    })
}

/// Close the application's coroutine, if started, and report an unfinished call as failed.
///
/// # Safety
/// `call` is a live `AppCall`; the GIL is held.
unsafe fn close(py: Python<'_>, call: *mut AppCall) -> PyResult<()> {
    // SAFETY: per the function's contract.
    unsafe {
        enter(call)?;
        let closed = if (*call).coroutine.is_null() {
            Ok(())
        } else {
            let coroutine = Bound::from_borrowed_ptr(py, (*call).coroutine);
            match coroutine.getattr(intern!(py, "close")) {
                Ok(close) => close.call0().map(drop),
                Err(_) => Ok(()),
            }
        };
        (*call).running = false;
        if !(*call).finished {
            (*call).finished = true;
            report(py, call, false);
        }
        closed
    }
}

/// `tp_getattro`: the object's own attributes, else the application's coroutine's.
unsafe extern "C" fn getattro(slf: *mut ffi::PyObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: Python passes a live instance and attribute name, holding the GIL.
    unsafe {
        let found = ffi::PyObject_GenericGetAttr(slf, name);
        let coroutine = (*slf.cast::<AppCall>()).coroutine;
        if found.is_null() && !coroutine.is_null() && ffi::PyErr_ExceptionMatches(ffi::PyExc_AttributeError) != 0 {
            ffi::PyErr_Clear();
            return ffi::PyObject_GetAttr(coroutine, name);
        }
        found
    }
}

/// `tp_traverse`: the type and every object held.
unsafe extern "C" fn traverse(slf: *mut ffi::PyObject, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
    // SAFETY: the collector passes a live instance.
    unsafe {
        let call = slf.cast::<AppCall>();
        let held = [
            ffi::Py_TYPE(slf).cast(),
            (*call).app,
            (*call).scope,
            (*call).receive,
            (*call).send,
            (*call).error_logger,
            (*call).coroutine,
        ];
        for object in held {
            if !object.is_null() {
                let visited = visit(object, arg);
                if visited != 0 {
                    return visited;
                }
            }
        }
        0
    }
}

/// `tp_clear`: drop every object held.
unsafe extern "C" fn clear(slf: *mut ffi::PyObject) -> c_int {
    // SAFETY: the collector (or `dealloc`) passes a live instance; each field is an owned
    // reference or NULL.
    unsafe {
        let call = slf.cast::<AppCall>();
        for field in [
            &raw mut (*call).app,
            &raw mut (*call).scope,
            &raw mut (*call).receive,
            &raw mut (*call).send,
            &raw mut (*call).error_logger,
            &raw mut (*call).coroutine,
        ] {
            let object = std::mem::replace(&mut *field, ptr::null_mut());
            if !object.is_null() {
                ffi::Py_DECREF(object);
            }
        }
        0
    }
}

/// `tp_finalize` (PEP 442): a call dropped unfinished (its task destroyed while pending) is
/// closed, so the response ends and the server stops counting it.
unsafe extern "C" fn finalize(slf: *mut ffi::PyObject) {
    // SAFETY: Python finalizes a live instance, holding the GIL.
    unsafe {
        let call = slf.cast::<AppCall>();
        if (*call).finished || (*call).send.is_null() {
            return;
        }
        let py = Python::assume_attached();
        let pending = PyErr::take(py);
        if let Err(err) = close(py, call) {
            err.write_unraisable(py, Some(&Bound::from_borrowed_ptr(py, slf)));
        }
        if let Some(pending) = pending {
            pending.restore(py);
        }
    }
}

/// `tp_dealloc`: finalize an unfinished call, drop what it holds, free the memory, release the
/// type.
unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: CPython deallocates a live instance of the heap type once, holding the GIL.
    unsafe {
        if !(*slf.cast::<AppCall>()).finished && ffi::PyObject_CallFinalizerFromDealloc(slf) < 0 {
            return;
        }
        ffi::PyObject_GC_UnTrack(slf.cast());
        clear(slf);
        let object_type = ffi::Py_TYPE(slf);
        if let Some(free) = (*object_type).tp_free {
            free(slf.cast());
        }
        ffi::Py_DECREF(object_type.cast());
    }
}
