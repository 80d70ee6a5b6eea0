//! The timeouts of one connection: keep-alive, request head and send.
//!
//! One [`Sleep`] per connection serves all three. It is re-armed lazily: requests only move
//! counters and a timestamp ([`ConnActivity`]), and the connection task, each time hyper has
//! polled the connection, works out the earliest deadline that applies and moves the sleep only
//! if it would wake too late. A busy keep-alive connection thus touches the timer map about once
//! per keep-alive period, not once per request (hyper's own header-read timer is off).
//!
//! - Keep-alive (`--timeout-keep-alive`): no exchange in flight and nothing received.
//! - Request head (`--timeout-header-read`, HTTP/1.x): bytes arrived while idle, and the head
//!   they began is still not complete (slowloris).
//! - Send (`--timeout-send`): the socket refused response bytes, and since then it has neither
//!   become writable nor has the client acknowledged any queued byte (a client that stopped
//!   reading). The kernel signals writability only once a good part of the send buffer is free,
//!   so a slow reader is told apart from a stopped one by the send queue (`SIOCOUTQ`), read when
//!   the socket blocks and when the deadline comes.
//!
//! The request-body timeout belongs to each exchange (`asgi::exchange`), as it counts only
//! while the application waits for the body.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use crate::runtime::io::unsent_bytes;
use crate::runtime::reactor::IoSlot;
use crate::runtime::timer::{self, Sleep};
use crate::settings::Settings;

/// What the service side tells the watchdog: how many exchanges are in flight, since when none.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    active: Cell<u32>,
    /// Counts the times the connection became idle, so the watchdog notices each new idle period.
    idle_epoch: Cell<u32>,
    idle_since: Cell<Instant>,
    /// The connection carries HTTP/2 (its idle periods have no request heads to time).
    http2: Cell<bool>,
}

impl ConnActivity {
    /// A connection that is idle from now on.
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self {
            active: Cell::new(0),
            idle_epoch: Cell::new(0),
            idle_since: Cell::new(timer::now()),
            http2: Cell::new(false),
        })
    }

    /// An exchange starts; it counts as in flight until the guard is dropped.
    pub(crate) fn begin(self: &Rc<Self>, http2: bool) -> ActiveExchange {
        self.active.set(self.active.get() + 1);
        self.http2.set(http2);
        ActiveExchange(self.clone())
    }
}

/// An exchange in flight (its response is not fully handed to hyper yet), or a WebSocket session.
#[derive(Debug)]
pub(crate) struct ActiveExchange(Rc<ConnActivity>);

impl Drop for ActiveExchange {
    fn drop(&mut self) {
        let activity = &self.0;
        let active = activity.active.get().saturating_sub(1);
        activity.active.set(active);
        if active == 0 {
            activity.idle_epoch.set(activity.idle_epoch.get().wrapping_add(1));
            activity.idle_since.set(timer::now());
        }
    }
}

/// Which timeout ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Idle for `--timeout-keep-alive`: close (HTTP/2: GOAWAY first).
    Idle,
    /// A request head not complete within `--timeout-header-read`: drop the connection.
    Head,
    /// No response byte accepted by the client for `--timeout-send`: drop the connection.
    Send,
}

/// The timeouts that apply to connections, from the settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) keep_alive: Duration,
    pub(crate) header_read: Option<Duration>,
    pub(crate) send: Option<Duration>,
}

impl Limits {
    /// The connection timeouts of `settings`.
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            keep_alive: settings.timeout_keep_alive,
            header_read: settings.timeout_header_read,
            send: settings.timeout_send,
        }
    }
}

/// A socket refusing output, as last seen making progress.
#[derive(Clone, Copy, Debug)]
struct Blocked {
    write_events: u32,
    since: Instant,
    unsent: Option<u32>,
}

/// The watchdog of one connection, polled by the connection task.
pub(crate) struct Watchdog {
    activity: Rc<ConnActivity>,
    slot: Arc<IoSlot>,
    /// The connection's socket, which outlives the watchdog (both end with the connection task).
    fd: RawFd,
    limits: Limits,
    /// The idle period last looked at, and the socket's read count when it began.
    seen_epoch: u32,
    read_mark: u32,
    /// When bytes first arrived in the current idle period.
    head_started: Option<Instant>,
    /// Since when the socket refuses output: its write events and send queue then.
    write_blocked: Option<Blocked>,
    /// The idle timeout already led to a graceful close: do not report it again.
    idle_reported: bool,
    sleep: Sleep,
}

impl Watchdog {
    /// The watchdog of a connection whose socket's readiness is `slot`.
    ///
    /// Every read since the socket was registered counts: bytes read before the watchdog exists
    /// began the first request head (or, with TLS, the handshake did).
    pub(crate) fn new(activity: Rc<ConnActivity>, slot: Arc<IoSlot>, fd: RawFd, limits: Limits) -> Self {
        let seen_epoch = activity.idle_epoch.get();
        Self {
            activity,
            slot,
            fd,
            limits,
            seen_epoch,
            read_mark: 0,
            head_started: None,
            write_blocked: None,
            idle_reported: false,
            sleep: Sleep::until(timer::now()),
        }
    }

    /// Look at the connection (after hyper polled it): `Some` when a timeout ran out, else the
    /// sleep is armed no later than the next deadline and wakes the task then.
    pub(crate) fn check(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        let mut now = timer::now();
        loop {
            let (deadline, expired) = self.next_deadline(now)?;
            if deadline <= now {
                if expired == Expired::Send && self.send_progressed(now) {
                    continue;
                }
                return self.report(expired);
            }
            let armed = self.sleep.deadline();
            if armed > now && armed <= deadline {
                // A wake-up at or before the deadline is pending already.
                return None;
            }
            self.sleep.reset(deadline);
            if Pin::new(&mut self.sleep).poll(cx).is_pending() {
                return None;
            }
            // The deadline passed while arming: look again with the clock itself.
            now = Instant::now();
        }
    }

    /// Whether the client acknowledged queued bytes since the socket was last seen blocked; if
    /// so, the send timeout starts over.
    fn send_progressed(&mut self, now: Instant) -> bool {
        let unsent = unsent_bytes(self.fd);
        match &mut self.write_blocked {
            Some(blocked) if blocked.unsent != unsent => {
                blocked.unsent = unsent;
                blocked.since = now;
                true
            }
            _ => false,
        }
    }

    fn report(&mut self, expired: Expired) -> Option<Expired> {
        if expired == Expired::Idle {
            if self.idle_reported {
                return None;
            }
            self.idle_reported = true;
        }
        Some(expired)
    }

    /// The earliest deadline that applies now, and what running out of it means.
    fn next_deadline(&mut self, now: Instant) -> Option<(Instant, Expired)> {
        if !self.slot.may_write() {
            // Output is pending: only the send timeout applies, counted from the last write
            // readiness (a client that reads a little makes the socket writable again).
            let limit = self.limits.send?;
            let write_events = self.slot.write_events();
            let since = match self.write_blocked {
                Some(blocked) if blocked.write_events == write_events => blocked.since,
                _ => {
                    self.write_blocked = Some(Blocked { write_events, since: now, unsent: unsent_bytes(self.fd) });
                    now
                }
            };
            return Some((since + limit, Expired::Send));
        }
        self.write_blocked = None;
        let activity = &self.activity;
        if activity.active.get() > 0 {
            return None;
        }
        let epoch = activity.idle_epoch.get();
        if epoch != self.seen_epoch {
            self.seen_epoch = epoch;
            self.read_mark = self.slot.reads();
            self.head_started = None;
        }
        if !activity.http2.get() {
            if self.head_started.is_none() && self.slot.reads() != self.read_mark {
                self.head_started = Some(now);
            }
            if let Some(started) = self.head_started {
                return self.limits.header_read.map(|limit| (started + limit, Expired::Head));
            }
        }
        Some((activity.idle_since.get() + self.limits.keep_alive, Expired::Idle))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{ConnActivity, Expired, Limits, Watchdog};
    use crate::runtime::reactor::IoSlot;

    const LIMITS: Limits = Limits {
        keep_alive: Duration::from_secs(5),
        header_read: Some(Duration::from_secs(10)),
        send: Some(Duration::from_secs(60)),
    };

    fn watchdog() -> (Watchdog, Arc<IoSlot>, std::rc::Rc<ConnActivity>) {
        let activity = ConnActivity::new();
        let slot = Arc::new(IoSlot::default());
        // No real socket: the send queue is unknown (`None`) throughout.
        (Watchdog::new(activity.clone(), slot.clone(), -1, LIMITS), slot, activity)
    }

    #[test]
    fn idle_connection_has_the_keep_alive_deadline() {
        let (mut dog, _, activity) = watchdog();
        let now = Instant::now();
        let (deadline, expired) = dog.next_deadline(now).unwrap();
        assert_eq!(expired, Expired::Idle);
        assert_eq!(deadline, activity.idle_since.get() + LIMITS.keep_alive);
    }

    #[test]
    fn bytes_while_idle_start_the_header_timer() {
        let (mut dog, slot, _) = watchdog();
        slot.count_read();
        let now = Instant::now();
        assert_eq!(dog.next_deadline(now), Some((now + Duration::from_secs(10), Expired::Head)));
        // The head's start does not move when more bytes come.
        slot.count_read();
        assert_eq!(
            dog.next_deadline(now + Duration::from_secs(1)),
            Some((now + Duration::from_secs(10), Expired::Head))
        );
    }

    #[test]
    fn no_timeout_while_a_request_is_in_flight_then_idle_again() {
        let (mut dog, slot, activity) = watchdog();
        slot.count_read();
        let active = activity.begin(false);
        assert_eq!(dog.next_deadline(Instant::now()), None);
        drop(active);
        // A new idle period: the bytes read before it do not count as a new head.
        let (deadline, expired) = dog.next_deadline(Instant::now()).unwrap();
        assert_eq!(expired, Expired::Idle);
        assert_eq!(deadline, activity.idle_since.get() + LIMITS.keep_alive);
    }

    #[test]
    fn http2_idle_periods_have_no_head_timer() {
        let (mut dog, slot, activity) = watchdog();
        drop(activity.begin(true));
        slot.count_read();
        assert_eq!(dog.next_deadline(Instant::now()).map(|(_, e)| e), Some(Expired::Idle));
    }

    #[test]
    fn blocked_output_has_the_send_deadline_until_the_socket_is_writable() {
        let (mut dog, slot, activity) = watchdog();
        let _active = activity.begin(false);
        slot.clear_writable();
        let now = Instant::now();
        assert_eq!(dog.next_deadline(now), Some((now + Duration::from_secs(60), Expired::Send)));
        // Still blocked later: the deadline stays where it was.
        let later = now + Duration::from_secs(30);
        assert_eq!(dog.next_deadline(later), Some((now + Duration::from_secs(60), Expired::Send)));
        // The send queue is unknown here, so there is no progress to see.
        assert!(!dog.send_progressed(later));
    }
}
