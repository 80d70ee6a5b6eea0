//! A single-threaded async runtime driven by the Python event loop.
//!
//! The network stack runs on the same thread as the Python event loop so that a request never
//! crosses a thread: the runtime owns an epoll instance ([`mio::Poll`]) whose file descriptor is
//! registered with the loop (`loop.add_reader(fd, drive)`). When a socket, a timer or a task
//! wake-up is ready, the epoll fd becomes readable and the loop calls [`Runtime::drive_with`], which
//! handles the ready I/O events, fires expired timers and polls every woken task once.
//!
//! Pieces: [`executor`] (tasks and wakers), [`reactor`] (I/O readiness), [`timer`] (sleeps
//! backed by a timerfd) and [`io`] (socket wrappers implementing hyper's I/O traits).

pub(crate) mod executor;
pub(crate) mod io;
pub(crate) mod reactor;
pub(crate) mod timer;

use std::cell::RefCell;
use std::io as stdio;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use mio::{Events, Poll, Token};

use executor::Executor;
use reactor::Reactor;
use timer::Timers;

/// Token of the eventfd that wakes the runtime for tasks woken outside of [`Runtime::drive_with`].
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
/// Token of the timerfd armed at the earliest timer deadline.
const TIMER_TOKEN: Token = Token(usize::MAX - 2);
/// How many I/O events one `drive` call takes from epoll at most.
const EVENTS_CAPACITY: usize = 1024;
/// Passes over the woken tasks that one [`Runtime::drive_with`] makes after its first, so that a
/// flood of new requests cannot keep it from returning to the event loop.
const EXTRA_PASSES: usize = 8;

/// The runtime of one thread: created on first use, lives as long as the thread.
pub(crate) struct Runtime {
    pub(crate) reactor: Reactor,
    pub(crate) executor: Executor,
    pub(crate) timers: Timers,
    poll: RefCell<Poll>,
    events: RefCell<Events>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// The runtime of the current thread, created on first use.
pub(crate) fn current() -> stdio::Result<Rc<Runtime>> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(rt) = c.as_ref() {
            return Ok(rt.clone());
        }
        let rt = Rc::new(Runtime::new()?);
        *c = Some(rt.clone());
        Ok(rt)
    })
}

/// The runtime of the current thread, which must exist already.
///
/// # Panics
/// When called on a thread that never created its runtime: only code running inside
/// runtime tasks calls this.
pub(crate) fn handle() -> Rc<Runtime> {
    CURRENT.with(|c| c.borrow().clone().expect("tricorn runtime used outside of its thread"))
}

/// Count an application started by the task being polled (`Executor::count_app_start`),
/// without the reference-count traffic of [`handle`].
pub(crate) fn count_app_start() {
    CURRENT.with(|c| {
        if let Some(rt) = c.borrow().as_ref() {
            rt.executor.count_app_start();
        }
    });
}

/// Run `f` with the current thread's runtime, if this thread has one.
pub(crate) fn with_current(f: impl FnOnce(&Runtime)) {
    let rt = CURRENT.try_with(|c| c.borrow().clone()).ok().flatten();
    if let Some(rt) = rt {
        f(&rt);
    }
}

/// hyper's executor (HTTP/2 streams): spawns on the current thread's runtime.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LocalExec;

impl<F: Future<Output = ()> + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        spawn(future);
    }
}

/// Run `future` for at most `limit`; `None` if the time ran out first.
pub(crate) async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(timer::Sleep::until(std::time::Instant::now() + limit));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(output));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Spawn a task on the current thread's runtime; returns its id (see [`Executor::cancel`]).
pub(crate) fn spawn(future: impl Future<Output = ()> + 'static) -> usize {
    handle().executor.spawn(Box::pin(future))
}

impl Runtime {
    fn new() -> stdio::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        let timers = Timers::new(&registry, TIMER_TOKEN)?;
        Ok(Self {
            reactor: Reactor::new(registry),
            executor: Executor::new(waker),
            timers,
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_CAPACITY)),
        })
    }

    /// The epoll file descriptor: readable whenever [`Runtime::drive_with`] has work to do.
    pub(crate) fn fileno(&self) -> RawFd {
        self.poll.borrow().as_raw_fd()
    }

    /// [`drive_with`](Self::drive_with) with nothing between the passes.
    #[cfg(test)]
    pub(crate) fn drive(&self) -> stdio::Result<()> {
        self.drive_with(|| false)
    }

    /// Handle ready I/O, fire expired timers, then poll every woken task; then call `between`,
    /// and while it says it woke tasks (up to [`EXTRA_PASSES`] times), poll them too.
    ///
    /// Called from the event loop when the epoll fd is readable; never blocks.
    pub(crate) fn drive_with(&self, mut between: impl FnMut() -> bool) -> stdio::Result<()> {
        self.executor.begin_drive();
        let polled = self.dispatch_events();
        self.timers.fire_expired();
        self.executor.run_ready();
        // What `between` runs may take a while: from here on the clock is read afresh.
        self.timers.forget_now();
        for _ in 0..EXTRA_PASSES {
            // What `between` wakes signals no eventfd: `run_ready` follows.
            self.executor.begin_drive();
            if !between() {
                self.executor.end_drive();
                break;
            }
            self.executor.run_ready();
        }
        self.timers.rearm();
        polled
    }

    /// Take the ready events from epoll and wake the tasks waiting for them.
    fn dispatch_events(&self) -> stdio::Result<()> {
        let mut poll = self.poll.borrow_mut();
        let mut events = self.events.borrow_mut();
        match poll.poll(&mut events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) if e.kind() == stdio::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                WAKER_TOKEN => {}
                TIMER_TOKEN => self.timers.clear_fd(),
                token => self.reactor.dispatch(token, event),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::future::poll_fn;
    use std::rc::Rc;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use super::timer::Sleep;
    use super::{current, spawn};

    /// Drive the runtime until `done` or the deadline.
    fn drive_until(done: impl Fn() -> bool, limit: Duration) {
        let rt = current().unwrap();
        let deadline = Instant::now() + limit;
        while !done() && Instant::now() < deadline {
            rt.drive().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn spawned_task_runs_on_drive() {
        current().unwrap();
        let ran = Rc::new(Cell::new(false));
        let flag = ran.clone();
        spawn(async move { flag.set(true) });
        drive_until(|| ran.get(), Duration::from_secs(1));
        assert!(ran.get());
    }

    #[test]
    fn woken_task_is_polled_again() {
        current().unwrap();
        let polls = Rc::new(Cell::new(0));
        let count = polls.clone();
        spawn(poll_fn(move |cx| {
            count.set(count.get() + 1);
            if count.get() < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        drive_until(|| polls.get() == 3, Duration::from_secs(1));
        assert_eq!(polls.get(), 3);
    }

    #[test]
    fn wake_from_another_thread_makes_the_fd_readable() {
        let rt = current().unwrap();
        let waker = Rc::new(Cell::new(None));
        let slot = waker.clone();
        let finished = Rc::new(Cell::new(false));
        let done = finished.clone();
        let mut first = true;
        spawn(poll_fn(move |cx| {
            if first {
                first = false;
                slot.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                done.set(true);
                Poll::Ready(())
            }
        }));
        rt.drive().unwrap();
        let remote = waker.take().expect("task parked its waker");
        std::thread::spawn(move || remote.wake()).join().unwrap();
        let mut fds = libc::pollfd { fd: rt.fileno(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, a bounded timeout.
        let ready = unsafe { libc::poll(&mut fds, 1, 1000) };
        assert_eq!(ready, 1, "the epoll fd must be readable after a remote wake-up");
        rt.drive().unwrap();
        assert!(finished.get());
    }

    #[test]
    fn sleep_completes_after_its_deadline_via_the_timerfd() {
        let rt = current().unwrap();
        let start = Instant::now();
        let woke = Rc::new(Cell::new(None));
        let at = woke.clone();
        spawn(async move {
            Sleep::until(Instant::now() + Duration::from_millis(30)).await;
            at.set(Some(Instant::now()));
        });
        rt.drive().unwrap();
        let mut fds = libc::pollfd { fd: rt.fileno(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, a bounded timeout.
        assert_eq!(unsafe { libc::poll(&mut fds, 1, 2000) }, 1, "the timerfd must wake the loop");
        drive_until(|| woke.get().is_some(), Duration::from_secs(2));
        let elapsed = woke.get().expect("sleep completed") - start;
        assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
    }

    #[test]
    fn a_pass_starts_a_bounded_number_of_applications_and_comes_back_for_the_rest() {
        let rt = current().unwrap();
        let limit = super::executor::APP_STARTS_PER_PASS;
        let started = Rc::new(Cell::new(0));
        for _ in 0..limit + 8 {
            let count = started.clone();
            spawn(async move {
                count.set(count.get() + 1);
                super::count_app_start();
            });
        }
        rt.drive().unwrap();
        assert_eq!(started.get(), limit, "a pass stops once it started its share");
        let mut fds = libc::pollfd { fd: rt.fileno(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, a bounded timeout.
        assert_eq!(unsafe { libc::poll(&mut fds, 1, 1000) }, 1, "the loop must be called back for the rest");
        rt.drive().unwrap();
        assert_eq!(started.get(), limit + 8);
    }

    #[test]
    fn tasks_woken_between_passes_run_in_the_same_drive_without_a_signal() {
        let rt = current().unwrap();
        rt.drive().unwrap();
        let ran = Rc::new(Cell::new(0));
        let mut calls = 0;
        rt.drive_with(|| {
            calls += 1;
            if calls > 2 {
                return false;
            }
            let count = ran.clone();
            spawn(async move { count.set(count.get() + 1) });
            true
        })
        .unwrap();
        assert_eq!((calls, ran.get()), (3, 2));
        let mut fds = libc::pollfd { fd: rt.fileno(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no timeout.
        assert_eq!(unsafe { libc::poll(&mut fds, 1, 0) }, 0, "nothing is left for the loop");
    }

    #[test]
    fn dropped_sleep_leaves_no_timer_behind() {
        let rt = current().unwrap();
        let before = rt.timers.pending_len();
        let handle = spawn(async {
            Sleep::until(Instant::now() + Duration::from_secs(60)).await;
        });
        rt.drive().unwrap();
        assert_eq!(rt.timers.pending_len(), before + 1);
        rt.executor.cancel(handle);
        assert_eq!(rt.timers.pending_len(), before);
    }
}
