//! Timers of the loop-thread runtime, backed by one timerfd.
//!
//! Pending sleeps sit in an ordered map keyed by deadline; the timerfd (registered with the
//! runtime's epoll instance) is armed at the earliest deadline, so an expiring timer makes the
//! epoll fd readable and brings the event loop back to `drive`. A dropped [`Sleep`] removes its
//! entry at once: hyper creates one header-read timer per request, and stale entries would pile up.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Key of a pending sleep: its deadline, then a sequence number to keep keys unique.
type Key = (Instant, u64);

thread_local! {
    /// The time `Runtime::drive_with` started at, read by [`now`].
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time the current `Runtime::drive_with` call started at, while it polls the tasks the
/// epoll events woke: a clock for deadlines of seconds that costs no system call (those tasks run
/// within microseconds of it). Afterwards and outside of `drive_with`, the actual time.
pub(crate) fn now() -> Instant {
    NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Pending sleeps and the timerfd that fires at the earliest one.
pub(crate) struct Timers {
    fd: OwnedFd,
    pending: RefCell<BTreeMap<Key, Waker>>,
    next_seq: Cell<u64>,
    /// Deadline the timerfd is armed for, if it is armed.
    armed: Cell<Option<Instant>>,
}

impl Timers {
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        // SAFETY: plain system call; the returned fd is checked and owned below.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Self { fd, pending: RefCell::new(BTreeMap::new()), next_seq: Cell::new(0), armed: Cell::new(None) })
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> Key {
        let seq = self.next_seq.get();
        self.next_seq.set(seq.wrapping_add(1));
        let key = (deadline, seq);
        self.pending.borrow_mut().insert(key, waker);
        if self.armed.get().is_none_or(|armed| deadline < armed) {
            self.arm(deadline);
        }
        key
    }

    fn update_waker(&self, key: &Key, waker: &Waker) {
        if let Some(parked) = self.pending.borrow_mut().get_mut(key)
            && !parked.will_wake(waker)
        {
            parked.clone_from(waker);
        }
    }

    fn remove(&self, key: &Key) {
        self.pending.borrow_mut().remove(key);
    }

    /// Number of pending sleeps.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Consume the timerfd's expiration count after it fired.
    pub(crate) fn clear_fd(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a local buffer from an fd we own; errors (EAGAIN) are fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.armed.set(None);
    }

    /// Wake every sleep whose deadline has passed, and set the clock [`now`] reads.
    pub(crate) fn fire_expired(&self) {
        let now = Instant::now();
        NOW.with(|cell| cell.set(Some(now)));
        loop {
            let waker = {
                let mut pending = self.pending.borrow_mut();
                match pending.first_entry() {
                    Some(entry) if entry.key().0 <= now => entry.remove(),
                    _ => break,
                }
            };
            waker.wake();
        }
    }

    /// The first pass of `drive_with` is done: [`now`] reads the clock again until the next call.
    pub(crate) fn forget_now(&self) {
        NOW.with(|cell| cell.set(None));
    }

    /// Arm the timerfd for the earliest pending deadline if it is not armed for it already.
    pub(crate) fn rearm(&self) {
        let earliest = self.pending.borrow().first_key_value().map(|(key, _)| key.0);
        if let Some(deadline) = earliest
            && self.armed.get().is_none_or(|armed| deadline < armed)
        {
            self.arm(deadline);
        }
    }

    fn arm(&self, deadline: Instant) {
        // A zero it_value disarms a timerfd: wait at least one nanosecond.
        let delay = deadline.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: delay.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: delay.subsec_nanos().into(),
            },
        };
        // SAFETY: valid fd and a fully initialised itimerspec; the old value is not requested.
        let rc = unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc == 0 {
            self.armed.set(Some(deadline));
        }
    }
}

/// A future that completes at a deadline; usable as hyper's `Sleep` and quinn's timer.
///
/// It holds no reference into the runtime, only its key, so it is `Send` and `Sync` as hyper
/// requires; it registers with the current thread's runtime when first polled.
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
    key: Option<Key>,
}

impl Sleep {
    /// A sleep that completes at `deadline`.
    pub(crate) fn until(deadline: Instant) -> Self {
        Self { deadline, key: None }
    }

    /// When the sleep completes.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Move the deadline; the sleep registers again when next polled.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        if deadline == self.deadline {
            return;
        }
        if let Some(key) = self.key.take() {
            super::with_current(|rt| rt.timers.remove(&key));
        }
        self.deadline = deadline;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let rt = super::handle();
        if Instant::now() >= self.deadline {
            if let Some(key) = self.key.take() {
                rt.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        match &self.key {
            Some(key) => rt.timers.update_waker(key, cx.waker()),
            None => {
                let key = rt.timers.insert(self.deadline, cx.waker().clone());
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            super::with_current(|rt| rt.timers.remove(&key));
        }
    }
}

/// hyper's timer, backed by the loop-thread runtime.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::until(deadline))
    }
}

impl hyper::rt::Sleep for Sleep {}
