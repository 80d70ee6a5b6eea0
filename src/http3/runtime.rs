//! quinn on the loop-thread runtime: its timers are [`Sleep`]s, its tasks run on the runtime's
//! executor, and its UDP socket is registered with the runtime's reactor. quinn-udp does the
//! system calls (GSO/GRO, ECN, packet info), so the socket path stays the crate's own.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncTimer, AsyncUdpSocket, UdpPoller};

use crate::runtime::io::Registered;
use crate::runtime::timer::Sleep;

/// quinn's runtime: every call happens on the loop thread that owns the endpoint.
#[derive(Debug)]
pub(crate) struct LoopRuntime;

impl quinn::Runtime for LoopRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Sleep::until(deadline))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + std::marker::Send>>) {
        crate::runtime::spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(LoopUdpSocket::new(socket)?))
    }
}

impl AsyncTimer for Sleep {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        Sleep::reset(self.get_mut(), deadline);
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(self, cx)
    }
}

/// The endpoint's UDP socket.
pub(crate) struct LoopUdpSocket {
    io: Registered<mio::net::UdpSocket>,
    state: UdpSocketState,
    /// Every task waiting to send: one socket, many connection drivers.
    writers: Arc<WriteWaiters>,
}

impl LoopUdpSocket {
    /// Register a bound UDP socket with the current thread's runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = Registered::new(mio::net::UdpSocket::from_std(socket))?;
        Ok(Self { io, state, writers: Arc::new(WriteWaiters::default()) })
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.poll_writable(&Waker::from(self.writers.clone())) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => {
                self.writers.add(cx.waker());
                Poll::Pending
            }
        }
    }
}

impl fmt::Debug for LoopUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopUdpSocket").field("local", &self.io.get_ref().local_addr()).finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for LoopUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritePoller(self))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_write_with(|socket| self.state.send(socket.into(), transmit))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_read_with(cx, |socket| self.state.recv(socket.into(), bufs, meta))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// One connection driver's wait for the socket to take datagrams again.
#[derive(Debug)]
struct WritePoller(Arc<LoopUdpSocket>);

impl UdpPoller for WritePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_writable(cx)
    }
}

/// The tasks waiting for the socket to become writable; the reactor holds one waker per
/// socket, so this waker stands for all of them and wakes each.
#[derive(Default)]
struct WriteWaiters {
    waiting: Mutex<Vec<Waker>>,
}

impl WriteWaiters {
    fn add(&self, waker: &Waker) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

impl Wake for WriteWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in waiting {
            waker.wake();
        }
    }
}
