//! A single-threaded async runtime driven by the Python event loop.
//!
//! The network stack runs on the same thread as the Python event loop so that a request never
//! crosses a thread: the runtime owns an epoll instance ([`mio::Poll`]) whose file descriptor is
//! registered with the loop (`loop.add_reader(fd, drive)`). When a socket, a timer or a task
//! wake-up is ready, the epoll fd becomes readable and the loop calls [`Runtime::drive`], which
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

/// Token of the eventfd that wakes the runtime for tasks woken outside of [`Runtime::drive`].
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
/// Token of the timerfd armed at the earliest timer deadline.
const TIMER_TOKEN: Token = Token(usize::MAX - 2);
/// How many I/O events one `drive` call takes from epoll at most.
const EVENTS_CAPACITY: usize = 1024;

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

/// Run `f` with the current thread's runtime, if this thread has one.
pub(crate) fn with_current(f: impl FnOnce(&Runtime)) {
    let rt = CURRENT.try_with(|c| c.borrow().clone()).ok().flatten();
    if let Some(rt) = rt {
        f(&rt);
    }
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

    /// The epoll file descriptor: readable whenever [`Runtime::drive`] has work to do.
    pub(crate) fn fileno(&self) -> RawFd {
        self.poll.borrow().as_raw_fd()
    }

    /// Handle ready I/O, fire expired timers, then poll every woken task.
    ///
    /// Called from the event loop when the epoll fd is readable; never blocks.
    pub(crate) fn drive(&self) -> stdio::Result<()> {
        self.executor.begin_drive();
        let polled = self.dispatch_events();
        self.timers.fire_expired();
        self.executor.run_ready();
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
