//! I/O readiness: which task waits for which socket.
//!
//! Sources are registered edge-triggered with the runtime's epoll instance. Each [`IoSlot`]
//! remembers whether its source may be readable or writable: a task makes the system call only
//! then, and parks its waker when the flag is clear or the call returns `WouldBlock` (which
//! clears the flag); the next readiness edge sets the flag and wakes the task. Everything runs
//! on the loop thread and events are only taken in `drive`, so no edge can be lost between a
//! failed call and the parking of the waker. This saves the `read` that would fail with `EAGAIN`
//! each time hyper looks for more input (about two per request on a keep-alive connection).

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Waker;

use futures_util::task::AtomicWaker;

use mio::event::{Event, Source};
use mio::{Interest, Registry, Token};
use slab::Slab;

/// Wakers parked on one registered source.
pub(crate) struct IoSlot {
    reader: AtomicWaker,
    writer: AtomicWaker,
    readable: AtomicBool,
    writable: AtomicBool,
    /// Reads that returned data (wrapping), so a watchdog can tell whether the peer sent
    /// anything since it last looked (readiness events cannot: data read before the first
    /// `epoll_wait` is never reported).
    reads: AtomicU32,
    /// Readiness events that reported the source writable (wrapping).
    write_events: AtomicU32,
    /// The response being written is the connection's last and its end is in the writer's
    /// buffer: see [`IoSlot::mark_last_write`].
    last_write: AtomicBool,
    /// The next write carries a chunk the response's next bytes follow: see
    /// [`IoSlot::mark_hold_tail`].
    hold_tail: AtomicBool,
}

impl Default for IoSlot {
    fn default() -> Self {
        // Unknown at first: try the call.
        Self {
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            reads: AtomicU32::new(0),
            write_events: AtomicU32::new(0),
            last_write: AtomicBool::new(false),
            hold_tail: AtomicBool::new(false),
        }
    }
}

impl IoSlot {
    /// Whether a read may succeed (no `WouldBlock` since the last readable edge).
    pub(crate) fn may_read(&self) -> bool {
        self.readable.load(Ordering::Acquire)
    }

    /// Whether a write may succeed.
    pub(crate) fn may_write(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// A read found the source drained.
    pub(crate) fn clear_readable(&self) {
        self.readable.store(false, Ordering::Release);
    }

    /// A write found the source full.
    pub(crate) fn clear_writable(&self) {
        self.writable.store(false, Ordering::Release);
    }

    /// How many reads returned data (wrapping).
    pub(crate) fn reads(&self) -> u32 {
        self.reads.load(Ordering::Relaxed)
    }

    /// A read returned data. Only the loop thread reads: a load and a store, no read-modify-write.
    pub(crate) fn count_read(&self) {
        self.reads.store(self.reads.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// How many readiness events reported the source writable (wrapping).
    pub(crate) fn write_events(&self) -> u32 {
        self.write_events.load(Ordering::Relaxed)
    }

    /// What remains to write is the end of the connection: writes may hold their last bytes
    /// back, and the flush that follows them sends the FIN with them.
    pub(crate) fn mark_last_write(&self) {
        self.last_write.store(true, Ordering::Relaxed);
    }

    /// The next write is a large chunk of a body whose next bytes follow: it may leave its
    /// short tail to go out with them.
    pub(crate) fn mark_hold_tail(&self) {
        self.hold_tail.store(true, Ordering::Relaxed);
    }

    /// Whether the next write may hold its tail back; clears the mark. Only the loop thread
    /// writes: a load, and a store when set, no read-modify-write.
    pub(crate) fn take_hold_tail(&self) -> bool {
        let held = self.hold_tail.load(Ordering::Relaxed);
        if held {
            self.hold_tail.store(false, Ordering::Relaxed);
        }
        held
    }

    /// Whether what is being written ends the connection.
    pub(crate) fn is_last_write(&self) -> bool {
        self.last_write.load(Ordering::Relaxed)
    }

    /// Park the waker of a task whose read would block.
    pub(crate) fn park_reader(&self, waker: &Waker) {
        self.reader.register(waker);
    }

    /// Park the waker of a task whose write would block.
    pub(crate) fn park_writer(&self, waker: &Waker) {
        self.writer.register(waker);
    }
}

/// Registration of sources with epoll and dispatch of their events.
pub(crate) struct Reactor {
    registry: Registry,
    slots: RefCell<Slab<Arc<IoSlot>>>,
}

impl Reactor {
    pub(crate) fn new(registry: Registry) -> Self {
        Self { registry, slots: RefCell::new(Slab::new()) }
    }

    /// Register `source` for read and write readiness.
    pub(crate) fn register(&self, source: &mut impl Source) -> io::Result<(Token, Arc<IoSlot>)> {
        let slot = Arc::new(IoSlot::default());
        let token = Token(self.slots.borrow_mut().insert(slot.clone()));
        if let Err(e) = self.registry.register(source, token, Interest::READABLE | Interest::WRITABLE) {
            self.slots.borrow_mut().remove(token.0);
            return Err(e);
        }
        Ok((token, slot))
    }

    /// Remove `source` from epoll and forget its slot.
    pub(crate) fn deregister(&self, source: &mut impl Source, token: Token) {
        // A source already gone from epoll is not an error here.
        let _ = self.registry.deregister(source);
        self.forget(token);
    }

    /// Forget the slot of a source that leaves epoll by being closed.
    pub(crate) fn forget(&self, token: Token) {
        let mut slots = self.slots.borrow_mut();
        if slots.contains(token.0) {
            slots.remove(token.0);
        }
    }

    /// Wake the tasks parked on the source of `token` for what `event` reports.
    pub(crate) fn dispatch(&self, token: Token, event: &Event) {
        let Some(slot) = self.slots.borrow().get(token.0).cloned() else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            slot.readable.store(true, Ordering::Release);
            slot.reader.wake();
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            slot.writable.store(true, Ordering::Release);
            // Only this thread counts: a load and a store, no read-modify-write needed.
            slot.write_events.store(slot.write_events.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            slot.writer.wake();
        }
    }
}
