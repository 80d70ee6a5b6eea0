//! A native `add` for asyncio's registry of tasks.
//!
//! Every `asyncio.Task` is added to one `weakref.WeakSet` when it is created (`_asyncio._all_tasks`
//! on Python 3.10 and 3.11; `_asyncio._scheduled_tasks` on 3.12 and 3.13, for the tasks that do
//! not finish in their eager first step): the C code calls the set's Python `add` method, and the
//! weak reference's callback, the set's Python `_remove`, takes the task out again when it is
//! freed. On Python 3.11 that is about 2,550 instructions of every request; done here, 750.
//!
//! [`install`] gives that one set an `add` of its own, in its instance dict, where the C code's
//! method lookup finds it before the class's. It does in native code what `WeakSet.add` and
//! `_remove` do (`Lib/_weakrefset.py`): the same weak references in the same `data` set, pending
//! removals committed first, and removals deferred to `_pending_removals` while the set is
//! iterated. `asyncio.all_tasks()` and every other method of the set work on it as before.

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyWeakrefReference};
use pyo3::{Borrowed, ffi, intern};

use super::c_slots::{self, Definitions};
use super::first_step;

/// Give asyncio's registry of tasks the native `add`, once per process.
///
/// Leaves it alone where it is not exactly a `weakref.WeakSet` (Python 3.14 keeps tasks in
/// per-thread lists; asyncio without its C module) or already has an `add` of its own.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let Some(registry) = task_registry(py)? else {
        return Ok(());
    };
    let add = intern!(py, "add");
    if registry.getattr(intern!(py, "__dict__"))?.cast::<PyDict>()?.contains(add)? {
        return Ok(());
    }
    let members = Members {
        data: registry.getattr(intern!(py, "data"))?.cast_into::<PySet>()?.unbind(),
        pending_removals: registry.getattr(intern!(py, "_pending_removals"))?.cast_into::<PyList>()?.unbind(),
    };
    let iterating = registry.getattr(intern!(py, "_iterating"))?.cast_into::<PySet>()?.unbind();
    let remove = Bound::new(py, RemoveTask { members: members.clone_ref(py), iterating })?;
    let add_task = AddTask {
        registry: PyWeakrefReference::new(&registry)?.unbind(),
        members,
        on_free: remove.getattr(intern!(py, "remove"))?.unbind(),
    };
    let method = c_slots::bound_function(&ADD, &Bound::new(py, add_task)?.into_any())?;
    registry.setattr(add, method)
}

/// The registry's `add`: a C function rather than a pyo3 method, whose call wrapper would cost
/// more than a task whose registration waits for its first step.
static ADD: Definitions<ffi::PyMethodDef> = Definitions(ffi::PyMethodDef {
    ml_name: c"add".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunction: add },
    ml_flags: ffi::METH_O,
    ml_doc: c"add(task)\n--\n\n`WeakSet.add(task)`, natively.".as_ptr(),
});

/// `add(task)`, bound to an [`AddTask`].
unsafe extern "C" fn add(holder: *mut ffi::PyObject, task: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: Python calls this with the GIL held, `holder` the `AddTask` the function was bound
    // to (`install`) and `task` a live argument.
    unsafe {
        let py = Python::assume_attached();
        let task = Borrowed::from_ptr(py, task);
        if first_step::defer_registration(&task) {
            return ffi::Py_NewRef(ffi::Py_None());
        }
        let holder = Borrowed::from_ptr(py, holder).cast_unchecked::<AddTask>();
        c_slots::raising("the registry of tasks' add()", |py| {
            holder.get().add(py, &task).map(|()| ffi::Py_NewRef(ffi::Py_None()))
        })
    }
}

/// The `WeakSet` that `asyncio.Task` registers tasks in, if the C module has one.
fn task_registry(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let module = match py.import(intern!(py, "_asyncio")) {
        Ok(module) => module,
        Err(error) if error.is_instance_of::<PyImportError>(py) => return Ok(None),
        Err(error) => return Err(error),
    };
    let weak_set = py.import(intern!(py, "_weakrefset"))?.getattr(intern!(py, "WeakSet"))?;
    for name in [intern!(py, "_scheduled_tasks"), intern!(py, "_all_tasks")] {
        if module.hasattr(name)? {
            let registry = module.getattr(name)?;
            if registry.get_type().is(&weak_set) {
                return Ok(Some(registry));
            }
        }
    }
    Ok(None)
}

/// The registry's own containers, which `WeakSet.__init__` binds once and every method changes
/// in place: held here to spare an attribute lookup on each call.
struct Members {
    /// `data`: the set of weak references.
    data: Py<PySet>,
    /// `_pending_removals`: weak references of freed tasks, waiting for an iteration to end.
    pending_removals: Py<PyList>,
}

impl Members {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        Self { data: self.data.clone_ref(py), pending_removals: self.pending_removals.clone_ref(py) }
    }
}

/// Holds the registry's `add`.
#[pyclass(frozen, module = "tricorn._tricorn")]
struct AddTask {
    /// The registry itself, for `_commit_removals`; held weakly as `WeakSet` holds itself.
    registry: Py<PyWeakrefReference>,
    members: Members,
    /// The callback of every weak reference this adds: [`RemoveTask::remove`], bound.
    on_free: Py<PyAny>,
}

impl AddTask {
    /// `WeakSet.add(task)`, with [`RemoveTask::remove`] as the weak reference's callback.
    fn add(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.members.pending_removals.bind(py).is_empty()
            && let Some(registry) = self.registry.bind(py).upgrade()
        {
            registry.call_method0(intern!(py, "_commit_removals"))?;
        }
        let reference = PyWeakrefReference::new_with(task, self.on_free.bind(py))?;
        self.members.data.bind(py).add(reference)
    }
}

/// Holds the callback of the tasks' weak references.
#[pyclass(frozen, module = "tricorn._tricorn")]
struct RemoveTask {
    members: Members,
    /// `_iterating`: the guards of the iterations in progress.
    iterating: Py<PySet>,
}

#[pymethods]
impl RemoveTask {
    /// `WeakSet._remove`: take a freed task's reference out, or leave it to `_commit_removals`
    /// while the set is iterated.
    fn remove(&self, py: Python<'_>, reference: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.iterating.bind(py).is_empty() {
            self.members.data.bind(py).discard(reference)?;
        } else {
            self.members.pending_removals.bind(py).append(reference)?;
        }
        Ok(())
    }
}
