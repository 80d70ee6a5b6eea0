//! The first steps of the request tasks a `drive()` call creates run in that same call, without
//! the loop's ready queue.
//!
//! `asyncio.Task.__init__` schedules a task's first step with `loop.call_soon(step,
//! context=...)`: a handle in the loop's ready queue, run at the loop's next iteration, after
//! which the responses the applications sent wait for one more iteration to be written. The
//! event loops the server makes itself (`--loop uvloop` and `--loop asyncio`, see
//! `tricorn.loops`) are subclasses whose `call_soon` is [`call_soon`] below. While `drive()`
//! creates a request task, that `call_soon` keeps the step in a list of its own instead; once
//! hyper has handled every ready connection, `drive()` runs the steps of the batch, each in its
//! task's context, then writes the responses they sent (`Runtime::drive_with`). Every other call
//! goes to the loop class's own `call_soon`, so tasks the application creates are scheduled as
//! usual.
//!
//! The steps run together, after the Rust work of the batch, as the loop would run them: the
//! interpreter's and hyper's code each stay warm in the caches over a batch. Running each step
//! as its task is made, between the requests (as `eager_start=True` does from Python 3.12 on,
//! which the server uses on a loop it did not make), ran fewer instructions but cost more time.

use std::cell::{Cell, RefCell};
use std::ptr;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::c_slots::{self, Definitions};

thread_local! {
    /// `drive()` runs on this thread and takes the first steps of the tasks it creates.
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
    /// The loop whose next `call_soon` is the first step of the request task being created.
    static FIRST_STEP_LOOP: Cell<*mut ffi::PyObject> = const { Cell::new(ptr::null_mut()) };
    /// First steps kept for the end of the pass.
    static PENDING: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
    /// The last step kept is that of the task being made, which has yet to register.
    static REGISTRATION_DUE: Cell<bool> = const { Cell::new(false) };
}

/// A task's first step, kept for the end of the pass.
struct Kept {
    step: Py<PyAny>,
    context: Py<PyAny>,
    /// The task, when its registration with `asyncio.all_tasks()` waits for the step.
    task: Option<Py<PyAny>>,
}

/// `call_soon`'s method definition.
static CALL_SOON: Definitions<ffi::PyMethodDef> = Definitions(ffi::PyMethodDef {
    ml_name: c"call_soon".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: call_soon },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"call_soon(callback, *args, context=None)\n--\n\nThe loop's `call_soon`; the first step of a request task waits for the end of the server's pass.".as_ptr(),
});

/// `event_loop`'s `call_soon`: [`call_soon`] bound to it, for the instance attribute of a loop
/// the server makes.
///
/// Held by the instance (a slot of the class `tricorn.loops` makes), it is found without making
/// a bound method on each `loop.call_soon` lookup, as `asyncio.Task.__init__` and every
/// future's callbacks do it: about 450 instructions a request.
#[pyfunction]
pub(crate) fn first_step_call_soon(event_loop: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    c_slots::bound_function(&CALL_SOON, event_loop).map(Bound::unbind)
}

/// Whether `event_loop`'s `call_soon` is [`call_soon`], bound to it.
pub(crate) fn takes_first_steps(event_loop: &Bound<'_, PyAny>) -> PyResult<bool> {
    let method = event_loop.getattr(intern!(event_loop.py(), "call_soon"))?;
    // SAFETY: `method` is a live object; its layout is read only once its type says it is a
    // built-in function.
    Ok(unsafe {
        ffi::PyCFunction_Check(method.as_ptr()) != 0 && {
            let function = method.as_ptr().cast::<ffi::PyCFunctionObject>();
            ptr::eq((*function).m_ml, &raw const CALL_SOON.0) && ptr::eq((*function).m_self, event_loop.as_ptr())
        }
    })
}

/// Run `create`, which creates a task on `event_loop`: within `drive()`, the task's first step
/// is kept for [`FirstSteps::run`].
pub(crate) fn with_first_step<T>(event_loop: &Bound<'_, PyAny>, create: impl FnOnce() -> T) -> T {
    if !COLLECTING.get() {
        return create();
    }
    FIRST_STEP_LOOP.set(event_loop.as_ptr());
    let created = create();
    // Cleared here too in case `Task.__init__` failed before its `call_soon` or registration.
    FIRST_STEP_LOOP.set(ptr::null_mut());
    REGISTRATION_DUE.set(false);
    created
}

/// Called by the registry of tasks as `task` registers: whether its registration waits for its
/// first step, kept for the end of the pass. A task that step finishes is never registered
/// (`asyncio.all_tasks()` leaves out done tasks); one that waits is registered right after it.
pub(crate) fn defer_registration(task: &Bound<'_, PyAny>) -> bool {
    if !REGISTRATION_DUE.replace(false) {
        return false;
    }
    PENDING.with_borrow_mut(|pending| match pending.last_mut() {
        Some(kept) => {
            kept.task = Some(task.clone().unbind());
            true
        }
        None => false,
    })
}

/// The first steps of one `drive()` call: collected while it lives.
pub(crate) struct FirstSteps {
    /// The first exception a step raised past its task (`KeyboardInterrupt`, `SystemExit`).
    error: Option<PyErr>,
}

impl FirstSteps {
    /// Start collecting first steps.
    pub(crate) fn collect() -> Self {
        COLLECTING.set(true);
        Self { error: None }
    }

    /// Run the steps collected so far, in the order their tasks were made; whether there were any.
    pub(crate) fn run(&mut self, py: Python<'_>) -> bool {
        let steps = PENDING.with_borrow_mut(std::mem::take);
        if steps.is_empty() {
            return false;
        }
        for kept in &steps {
            let ran = run_in_context(py, kept.step.bind(py), kept.context.bind(py))
                .and_then(|()| kept.task.as_ref().map_or(Ok(()), |task| register_unless_done(task.bind(py))));
            if let Err(error) = ran {
                self.error.get_or_insert(error);
            }
        }
        // Hand the emptied vector back, keeping its capacity for the next pass.
        let mut steps = steps;
        steps.clear();
        PENDING.with_borrow_mut(|pending| {
            if pending.is_empty() {
                *pending = steps;
            }
        });
        true
    }

    /// Run what is left, stop collecting, and return the first exception a step raised.
    pub(crate) fn finish(mut self, py: Python<'_>) -> PyResult<()> {
        while self.run(py) {}
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Drop for FirstSteps {
    fn drop(&mut self) {
        COLLECTING.set(false);
    }
}

/// `asyncio.tasks._register_task(task)` unless the task is done.
fn register_unless_done(task: &Bound<'_, PyAny>) -> PyResult<()> {
    static DONE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static REGISTER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = task.py();
    // `Task.done(task)`: the class's method itself spares the lookup on the task (`task` is
    // exactly an `asyncio.Task`, which `TaskSpawner` makes).
    let done =
        DONE.get_or_try_init(py, || PyResult::Ok(py.import("asyncio")?.getattr("Task")?.getattr("done")?.unbind()))?;
    if done.call1(py, (task,))?.is_truthy(py)? {
        return Ok(());
    }
    REGISTER.import(py, "asyncio.tasks", "_register_task")?.call1((task,)).map(drop)
}

/// `context.run(step)`.
fn run_in_context(py: Python<'_>, step: &Bound<'_, PyAny>, context: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the GIL is held; `context` is a `contextvars.Context` (checked by `call_soon`).
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = step.call0();
    // SAFETY: as above; the context was entered just now.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result.map(drop)
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
        if FIRST_STEP_LOOP.get() == slf && nargs == 1 && !kwnames.is_null() && ffi::PyTuple_GET_SIZE(kwnames) == 1 {
            FIRST_STEP_LOOP.set(ptr::null_mut());
            let (step, context) = (*args, *args.add(1));
            if ffi::PyContext_CheckExact(context) != 0 {
                let py = Python::assume_attached();
                let kept = Kept {
                    step: Bound::from_borrowed_ptr(py, step).unbind(),
                    context: Bound::from_borrowed_ptr(py, context).unbind(),
                    task: None,
                };
                PENDING.with_borrow_mut(|pending| pending.push(kept));
                REGISTRATION_DUE.set(true);
                return ffi::Py_NewRef(ffi::Py_None());
            }
        }
        // Any other call: the base class's `call_soon`, with the loop prepended to the arguments.
        let py = Python::assume_attached();
        let base = (*ffi::Py_TYPE(slf)).tp_base.cast::<ffi::PyObject>();
        let method = ffi::PyObject_GetAttr(base, intern!(py, "call_soon").as_ptr());
        if method.is_null() {
            return method;
        }
        let keywords = if kwnames.is_null() { 0 } else { ffi::PyTuple_GET_SIZE(kwnames) };
        let given = std::slice::from_raw_parts(args, usize::try_from(nargs + keywords).unwrap_or(0));
        let mut few = [ptr::null_mut(); 8];
        let mut many = Vec::new();
        let stack = if given.len() < few.len() {
            few[0] = slf;
            few[1..=given.len()].copy_from_slice(given);
            &few[..=given.len()]
        } else {
            many.push(slf);
            many.extend_from_slice(given);
            &many[..]
        };
        let result = ffi::PyObject_Vectorcall(method, stack.as_ptr(), (nargs + 1) as usize, kwnames);
        ffi::Py_DECREF(method);
        result
    }
}
