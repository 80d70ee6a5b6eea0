//! I/O readiness: which task waits for which socket.
//!
//! Sources are registered edge-triggered with the runtime's epoll instance. A task always
//! tries the system call first and parks its waker in the source's [`IoSlot`] only when the call
//! returns `WouldBlock`; the next readiness edge wakes it. Everything runs on the loop thread, so
//! no edge can arrive between the failed call and the parking of the waker.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::Waker;

use mio::event::{Event, Source};
use mio::{Interest, Registry, Token};
use slab::Slab;

/// Wakers parked on one registered source.
#[derive(Default)]
pub(crate) struct IoSlot {
    reader: RefCell<Option<Waker>>,
    writer: RefCell<Option<Waker>>,
}

impl IoSlot {
    /// Park the waker of a task whose read returned `WouldBlock`.
    pub(crate) fn park_reader(&self, waker: &Waker) {
        park(&self.reader, waker);
    }

    /// Park the waker of a task whose write returned `WouldBlock`.
    pub(crate) fn park_writer(&self, waker: &Waker) {
        park(&self.writer, waker);
    }
}

fn park(slot: &RefCell<Option<Waker>>, waker: &Waker) {
    let mut slot = slot.borrow_mut();
    match slot.as_ref() {
        Some(parked) if parked.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Registration of sources with epoll and dispatch of their events.
pub(crate) struct Reactor {
    registry: Registry,
    slots: RefCell<Slab<Rc<IoSlot>>>,
}

impl Reactor {
    pub(crate) fn new(registry: Registry) -> Self {
        Self {
            registry,
            slots: RefCell::new(Slab::new()),
        }
    }

    /// Register `source` for read and write readiness.
    pub(crate) fn register(&self, source: &mut impl Source) -> io::Result<(Token, Rc<IoSlot>)> {
        let slot = Rc::new(IoSlot::default());
        let token = Token(self.slots.borrow_mut().insert(slot.clone()));
        if let Err(e) = self
            .registry
            .register(source, token, Interest::READABLE | Interest::WRITABLE)
        {
            self.slots.borrow_mut().remove(token.0);
            return Err(e);
        }
        Ok((token, slot))
    }

    /// Remove `source` from epoll and forget its slot.
    pub(crate) fn deregister(&self, source: &mut impl Source, token: Token) {
        // Closing the fd removes it from epoll anyway; the error case needs no handling.
        let _ = self.registry.deregister(source);
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
        if (event.is_readable() || event.is_read_closed() || event.is_error())
            && let Some(waker) = slot.reader.borrow_mut().take()
        {
            waker.wake();
        }
        if (event.is_writable() || event.is_write_closed() || event.is_error())
            && let Some(waker) = slot.writer.borrow_mut().take()
        {
            waker.wake();
        }
    }
}
