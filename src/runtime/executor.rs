//! Tasks of the loop-thread runtime and their wakers.
//!
//! Futures are `!Send` and live in a slab owned by the loop thread. A [`Waker`] only carries the
//! task id and a handle to the ready queue, so it may be woken from any thread: a wake-up from
//! outside [`Executor::run_ready`] writes the runtime's eventfd once per batch, which makes the
//! epoll fd readable and brings the event loop back to `drive`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

use slab::Slab;

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Applications started per `drive` pass before the event loop gets a turn to step them.
///
/// hyper accepts every stream of an HTTP/2 read at once (100 with 10 connections of 10
/// streams); started together, their scopes and tasks (some 15 young Python objects each) would
/// set off the cyclic garbage collector once a batch. 40 is four such connections: a batch is
/// started in two or three groups, each connection's streams in one.
pub(crate) const APP_STARTS_PER_PASS: usize = 40;

/// Ids of woken tasks, shared with every waker.
struct ReadyQueue {
    state: Mutex<QueueState>,
    eventfd: mio::Waker,
}

struct QueueState {
    ids: Vec<usize>,
    /// `run_ready` is draining the queue: it will see new ids without a signal.
    draining: bool,
    /// The eventfd was written and `run_ready` has not run since.
    signaled: bool,
}

impl ReadyQueue {
    fn push(&self, id: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.ids.push(id);
        if !state.draining && !state.signaled {
            state.signaled = true;
            // A failed eventfd write can only mean the counter is saturated, i.e. already readable.
            let _ = self.eventfd.wake();
        }
    }
}

/// The waker of one task.
struct TaskWaker {
    id: usize,
    /// Set while the id sits in the ready queue, so a burst of wake-ups queues it once.
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.id);
        }
    }
}

struct Task {
    future: Option<BoxFuture>,
    waker: Arc<TaskWaker>,
}

/// The set of live tasks and the queue of woken ones.
pub(crate) struct Executor {
    tasks: RefCell<Slab<Task>>,
    queue: Arc<ReadyQueue>,
    /// Applications started in the current pass.
    app_starts: Cell<usize>,
}

impl Executor {
    pub(crate) fn new(eventfd: mio::Waker) -> Self {
        Self {
            tasks: RefCell::new(Slab::new()),
            queue: Arc::new(ReadyQueue {
                state: Mutex::new(QueueState { ids: Vec::new(), draining: false, signaled: false }),
                eventfd,
            }),
            app_starts: Cell::new(0),
        }
    }

    /// Add a task; it is first polled on the next `run_ready`. Returns its id.
    pub(crate) fn spawn(&self, future: BoxFuture) -> usize {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = entry.key();
        let waker = Arc::new(TaskWaker { id, queued: AtomicBool::new(false), queue: self.queue.clone() });
        entry.insert(Task { future: Some(future), waker: waker.clone() });
        drop(tasks);
        waker.wake_by_ref();
        id
    }

    /// Drop a task's future now (closing what it owns). Unknown or finished ids are ignored.
    pub(crate) fn cancel(&self, id: usize) {
        // A task being polled right now has no future in its slot: removing the slot makes
        // `poll_task` drop the future when the poll returns.
        let future = {
            let mut tasks = self.tasks.borrow_mut();
            if tasks.contains(id) { tasks.remove(id).future } else { None }
        };
        // Dropped outside the borrow: the future's destructor may spawn or cancel tasks.
        drop(future);
    }

    /// The waker of a live task.
    pub(crate) fn waker(&self, id: usize) -> Option<Waker> {
        self.tasks.borrow().get(id).map(|task| Waker::from(task.waker.clone()))
    }

    /// Start a `drive` pass: wake-ups from now on are picked up by `run_ready` without
    /// writing the eventfd.
    pub(crate) fn begin_drive(&self) {
        self.queue.state.lock().unwrap_or_else(PoisonError::into_inner).draining = true;
    }

    /// End a pass begun with [`begin_drive`](Self::begin_drive) without polling the woken tasks.
    pub(crate) fn end_drive(&self) {
        self.queue.end_drive();
    }

    /// Count an application started by the task being polled.
    pub(crate) fn count_app_start(&self) {
        self.app_starts.set(self.app_starts.get() + 1);
    }

    /// Poll every woken task, including tasks woken while this runs, until
    /// [`APP_STARTS_PER_PASS`] applications were started; ends the `drive` pass.
    ///
    /// Tasks left over stay queued and `EndDrive` writes the eventfd, so the event loop steps
    /// the applications started so far before `drive` starts more.
    pub(crate) fn run_ready(&self) {
        // Ends the pass even if a task panics, so later wake-ups signal the eventfd again.
        let _end = EndDrive(&self.queue);
        self.app_starts.set(0);
        let mut batch = Vec::new();
        loop {
            {
                let mut state = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.signaled = false;
                if state.ids.is_empty() {
                    return;
                }
                state.draining = true;
                std::mem::swap(&mut state.ids, &mut batch);
            }
            let mut ids = batch.drain(..);
            while let Some(id) = ids.next() {
                self.poll_task(id);
                if self.app_starts.get() >= APP_STARTS_PER_PASS {
                    let mut state = self.queue.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.ids.splice(0..0, ids);
                    return;
                }
            }
        }
    }

    fn poll_task(&self, id: usize) {
        let (mut future, task_waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(id) else { return };
            // `None` means the task is being polled further up the stack: nothing to do.
            let Some(future) = task.future.take() else { return };
            task.waker.queued.store(false, Ordering::Release);
            (future, task.waker.clone())
        };
        let waker = Waker::from(task_waker.clone());
        let done = future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
        let mut tasks = self.tasks.borrow_mut();
        // The task may have been cancelled (and its slot reused) while its future ran.
        let still_ours = tasks.get(id).is_some_and(|task| Arc::ptr_eq(&task.waker, &task_waker));
        if still_ours && !done {
            tasks[id].future = Some(future);
            return;
        }
        if still_ours {
            tasks.remove(id);
        }
        drop(tasks);
        // Dropped outside the borrow: the future's destructor may spawn or cancel tasks.
        drop(future);
    }
}

/// Clears the queue's `draining` flag when `run_ready` returns or unwinds.
struct EndDrive<'a>(&'a ReadyQueue);

impl Drop for EndDrive<'_> {
    fn drop(&mut self) {
        self.0.end_drive();
    }
}

impl ReadyQueue {
    /// Wake-ups signal the eventfd again; tasks still queued (left for the next pass, or behind
    /// a panic) signal it now, so that the loop comes back for them.
    fn end_drive(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.draining = false;
        if !state.ids.is_empty() && !state.signaled {
            state.signaled = true;
            let _ = self.eventfd.wake();
        }
    }
}
