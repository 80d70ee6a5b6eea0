//! Non-blocking sockets registered with the loop-thread runtime.
//!
//! [`Registered`] owns a mio source and implements hyper's `Read`/`Write` traits: every call
//! tries the system call first and parks the task's waker only on `WouldBlock`.

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use mio::Token;
use mio::event::Source;

use super::reactor::IoSlot;

/// A socket registered with the current thread's runtime; deregistered on drop.
pub(crate) struct Registered<S: Source> {
    io: S,
    token: Token,
    slot: Arc<IoSlot>,
    /// No other descriptor refers to the socket, so closing it leaves epoll by itself.
    sole_descriptor: bool,
    /// The write half is shut down (FIN sent).
    write_shut: bool,
}

impl<S: Source> Registered<S> {
    /// Register `io` with the current thread's runtime.
    pub(crate) fn new(mut io: S) -> io::Result<Self> {
        let (token, slot) = super::handle().reactor.register(&mut io)?;
        Ok(Self { io, token, slot, sole_descriptor: false, write_shut: false })
    }

    /// Register `io`, whose descriptor is the only one referring to the socket (an accepted
    /// connection): closing it removes it from the epoll set (epoll(7)), so dropping it saves
    /// the `epoll_ctl(EPOLL_CTL_DEL)` call.
    pub(crate) fn new_sole_descriptor(io: S) -> io::Result<Self> {
        let mut registered = Self::new(io)?;
        registered.sole_descriptor = true;
        Ok(registered)
    }

    /// The readiness state of the socket, for watchdogs that outlive the borrow of `self`.
    pub(crate) fn slot(&self) -> Arc<IoSlot> {
        self.slot.clone()
    }

    /// How to tell this socket that the response being written is the connection's last.
    pub(crate) fn last_write(&self) -> LastWrite {
        LastWrite(self.slot.clone())
    }

    /// Run `op` on the socket; park the task for readability if it would block.
    pub(crate) fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            if !self.slot.may_read() {
                self.slot.park_reader(cx.waker());
                return Poll::Pending;
            }
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.slot.clear_readable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }

    /// The socket itself.
    pub(crate) fn get_ref(&self) -> &S {
        &self.io
    }

    /// Run `op` on the socket if it may be writable; a `WouldBlock` result clears writability.
    pub(crate) fn try_write_with<T>(&self, op: impl FnOnce(&S) -> io::Result<T>) -> io::Result<T> {
        if !self.slot.may_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let result = op(&self.io);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.slot.clear_writable();
        }
        result
    }

    /// Whether the socket may be writable; parks `waker` for the next writable edge if not.
    pub(crate) fn poll_writable(&self, waker: &std::task::Waker) -> Poll<()> {
        if self.slot.may_write() {
            return Poll::Ready(());
        }
        self.slot.park_writer(waker);
        Poll::Pending
    }

    /// Run `op` on the socket; park the task for writability if it would block.
    pub(crate) fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            if !self.slot.may_write() {
                self.slot.park_writer(cx.waker());
                return Poll::Pending;
            }
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.slot.clear_writable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl<S: Source + AsRawFd> AsRawFd for Registered<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        if self.sole_descriptor {
            super::with_current(|rt| rt.reactor.forget(self.token));
        } else {
            super::with_current(|rt| rt.reactor.deregister(&mut self.io, self.token));
        }
    }
}

/// Bytes in the send queue of socket `fd` that the peer has not acknowledged yet (`SIOCOUTQ`,
/// tcp(7) and unix(7)); `None` if the kernel does not say.
pub(crate) fn unsent_bytes(fd: RawFd) -> Option<u32> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `SIOCOUTQ` (== `TIOCOUTQ`) writes one int to the pointer, which is valid; a bad or
    // closed fd only makes the call fail.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut queued) };
    if rc == 0 { u32::try_from(queued).ok() } else { None }
}

/// How the HTTP/1.1 service tells a connection's socket that the response being written is the
/// connection's last (the request or the response carried `Connection: close`, RFC 9112 §9.6).
///
/// Once marked, writes pass `MSG_MORE` (tcp(7)), which holds a short tail back, and the flush
/// that follows them shuts the write half down: the kernel sends the response's end and the FIN
/// in one segment, which the client acknowledges once. Written apart, as hyper does (the body,
/// then `shutdown` when the connection ends), they make two segments and two acknowledgements:
/// about a tenth of the server's CPU time for a request on a new connection.
///
/// The same handle marks a single write of a large body chunk that more of the body follows
/// ([`LastWrite::hold_tail`]): `MSG_MORE` keeps its short tail for the next write.
#[derive(Clone)]
pub(crate) struct LastWrite(Arc<IoSlot>);

impl LastWrite {
    /// hyper holds the whole of the connection's last response: what it writes from now on
    /// ends the connection.
    pub(crate) fn mark(&self) {
        self.0.mark_last_write();
    }

    /// The next write is a large body chunk that more of the response follows: the write may
    /// leave its short tail for the next one to carry.
    pub(crate) fn hold_tail(&self) {
        self.0.mark_hold_tail();
    }
}

/// A connected byte stream: what hyper reads requests from and writes responses to.
pub(crate) trait Stream: Source + AsRawFd + Unpin + Send {
    /// Write from `buf` without blocking.
    fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
    /// Write from `bufs` (one `writev`) without blocking.
    fn write_vectored_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Write from `bufs` without blocking, letting the kernel hold a short tail back for what
    /// follows (the FIN of a shutdown).
    fn write_vectored_held(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Shut the write half down (sends FIN).
    fn shutdown_write(&self) -> io::Result<()>;
}

/// `$held` is what `write_vectored_held` passes to `sendmsg`.
macro_rules! impl_stream {
    ($($ty:ty: $held:expr),*) => {$(
        impl Stream for $ty {
            fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn write_vectored_held(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                socket2::SockRef::from(self).send_vectored_with_flags(bufs, $held | libc::MSG_NOSIGNAL)
            }

            fn shutdown_write(&self) -> io::Result<()> {
                self.shutdown(std::net::Shutdown::Write)
            }
        }
    )*};
}

// A Unix stream has no segments to merge.
impl_stream!(mio::net::TcpStream: libc::MSG_MORE, mio::net::UnixStream: 0);

impl<S: Stream> Registered<S> {
    /// Read into the unfilled bytes at `buf`; clears readiness after a short read, which
    /// drained the socket (data arriving later raises a new edge).
    ///
    /// # Safety
    /// `buf` must be valid for writes; its bytes may be uninitialised.
    unsafe fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut [MaybeUninit<u8>]) -> Poll<io::Result<usize>> {
        let (ptr, len) = (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len());
        let n = ready!(self.poll_read_with(cx, |io| {
            // SAFETY: the caller guarantees `ptr..ptr + len` is writable.
            let n = unsafe { libc::read(io.as_raw_fd(), ptr, len) };
            if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n.cast_unsigned()) }
        }))?;
        if n > 0 {
            self.slot.count_read();
            if n < len {
                self.slot.clear_readable();
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Write from `bufs`; the tail may wait for the FIN while the last response is written.
    fn poll_write_bufs(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.slot.is_last_write() || self.slot.take_hold_tail() {
            self.poll_write_with(cx, |io| io.write_vectored_held(bufs))
        } else {
            self.poll_write_with(cx, |io| io.write_vectored_some(bufs))
        }
    }

    /// Shut the write half down, once; a peer that already left is not an error.
    fn shutdown_write(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.write_shut, true) {
            return Ok(());
        }
        match self.io.shutdown_write() {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

impl<S: Stream> hyper::rt::Read for Registered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `read(2)` only writes into the unfilled part, and `advance` is called with
        // exactly the count the kernel reports as written.
        unsafe {
            let n = ready!(self.poll_read_into(cx, buf.as_mut()))?;
            buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Stream> hyper::rt::Write for Registered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.slot.is_last_write() {
            return self.poll_write_bufs(cx, &[IoSlice::new(buf)]);
        }
        self.poll_write_with(cx, |io| io.write_some(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// hyper flushes once its buffer is all written: after the connection's last response,
    /// that is when the FIN goes, with the tail the writes held back (see [`LastWrite`]).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.slot.is_last_write() {
            return Poll::Ready(self.get_mut().shutdown_write());
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}

/// tokio's I/O traits, for crates built on them (tokio-rustls); same semantics as hyper's.
impl<S: Stream> tokio::io::AsyncRead for Registered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        // SAFETY: `read(2)` only writes into the unfilled part; exactly the bytes the kernel
        // reports as written are marked initialised and filled.
        unsafe {
            let n = ready!(self.poll_read_into(cx, buf.unfilled_mut()))?;
            buf.assume_init(n);
            buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Stream> tokio::io::AsyncWrite for Registered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io| io.write_some(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io| io.write_vectored_some(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}
