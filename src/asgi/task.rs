//! Creating the asyncio task that runs the application for one request.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::first_step;

/// Name given to request tasks (instead of asyncio's formatted `Task-N`).
const TASK_NAME: &str = "tricorn.request";

/// How request tasks are created.
pub(crate) enum TaskSpawner {
    /// No task factory on the loop: `asyncio.Task(coro, loop=loop, name=...)` directly, which
    /// skips the loop's `create_task` wrapper and the formatting of a `Task-N` name.
    ///
    /// On a loop the server made, `first_steps` is that loop and the first step runs at the end
    /// of the `drive()` pass ([`first_step`](super::first_step)). On another loop, on Python
    /// 3.12+, `eager_start=True`: the first step runs at once, and an application that does
    /// not wait for anything (a response from memory) is done without a trip through the loop's
    /// ready queue or asyncio's registry of tasks (a `WeakSet`).
    Direct { task_type: Py<PyAny>, kwargs: Py<PyDict>, first_steps: Option<Py<PyAny>> },
    /// The loop has a task factory (an eager task factory, a monitoring tool): honour it.
    Factory { create_task: Py<PyAny> },
}

impl TaskSpawner {
    /// The spawner for `event_loop`, chosen once at start-up.
    pub(crate) fn new(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        if event_loop.call_method0(intern!(py, "get_task_factory"))?.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "loop"), event_loop)?;
            kwargs.set_item(intern!(py, "name"), TASK_NAME)?;
            let mut first_steps = None;
            if first_step::takes_first_steps(event_loop)? {
                first_steps = Some(event_loop.clone().unbind());
            } else if py.version_info() >= (3, 12) {
                kwargs.set_item(intern!(py, "eager_start"), true)?;
            }
            let task_type = py.import(intern!(py, "asyncio"))?.getattr(intern!(py, "Task"))?;
            Ok(Self::Direct { task_type: task_type.unbind(), kwargs: kwargs.unbind(), first_steps })
        } else {
            Ok(Self::Factory { create_task: event_loop.getattr(intern!(py, "create_task"))?.unbind() })
        }
    }

    /// Start `coroutine` as a task, in `context` if given (else in a copy of the current one).
    ///
    /// A given context is entered with `context.run(...)` rather than passed as `context=`,
    /// which `asyncio.Task` only takes from Python 3.11 on.
    pub(crate) fn spawn(
        &self,
        py: Python<'_>,
        coroutine: Py<PyAny>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match (self, context) {
            (Self::Direct { task_type, kwargs, first_steps }, context) => {
                let create = || match context {
                    None => task_type.call(py, (coroutine,), Some(kwargs.bind(py))),
                    Some(context) => Ok(context
                        .call_method(intern!(py, "run"), (task_type, coroutine), Some(kwargs.bind(py)))?
                        .unbind()),
                };
                match first_steps {
                    Some(event_loop) => first_step::with_first_step(event_loop.bind(py), create),
                    None => create(),
                }
            }
            (Self::Factory { create_task }, None) => create_task.call1(py, (coroutine,)),
            (Self::Factory { create_task }, Some(context)) => {
                Ok(context.call_method1(intern!(py, "run"), (create_task, coroutine))?.unbind())
            }
        }
    }
}
