//! One full read for the first bytes of a connection whose protocol is detected (`--http auto`).
//!
//! hyper-util tells HTTP/1.1 from HTTP/2 by reading the first 24 bytes (the length of the HTTP/2
//! preface, RFC 9113 §3.4) into a buffer of that size; hyper's HTTP/1.1 parser then reads the rest
//! of the request head. On cleartext that is two `read` system calls for the first request of
//! every connection. [`ReadAhead`] answers that first small read from one read of up to
//! [`READ_AHEAD`] bytes and hands the rest to the next reads, so the whole head usually costs one.
//! After that it passes reads straight through.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};

/// How much the first read asks for: more than most request heads.
const READ_AHEAD: usize = 4096;

/// Reads shorter than this are the protocol check, worth reading ahead for (hyper's own
/// reads lend it at least 8 KiB).
const SMALL_READ: usize = 64;

/// The connection's I/O, with its first small read served from a larger one.
pub(crate) struct ReadAhead<I> {
    io: I,
    /// Bytes read ahead and not handed out yet, from `start` on.
    pending: Vec<u8>,
    start: usize,
    /// The first read has happened: from now on reads go straight to `io`.
    first_done: bool,
}

impl<I> ReadAhead<I> {
    /// Wrap a connection's I/O before anything was read from it.
    pub(crate) fn new(io: I) -> Self {
        Self { io, pending: Vec::new(), start: 0, first_done: false }
    }

    /// Copy as much of the pending bytes as fit into `buf`; frees them once all are handed out.
    fn hand_out(&mut self, buf: &mut ReadBufCursor<'_>) {
        let rest = &self.pending[self.start..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.start += n;
        if self.start == self.pending.len() {
            self.pending = Vec::new();
            self.start = 0;
        }
    }
}

impl<I: Read + Unpin> Read for ReadAhead<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.pending.len() {
            this.hand_out(&mut buf);
            return Poll::Ready(Ok(()));
        }
        if this.first_done || buf.remaining() >= SMALL_READ {
            this.first_done = true;
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let mut ahead = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut inner = ReadBuf::uninit(&mut ahead);
        ready!(Pin::new(&mut this.io).poll_read(cx, inner.unfilled()))?;
        this.first_done = true;
        let read = inner.filled();
        let n = read.len().min(buf.remaining());
        buf.put_slice(&read[..n]);
        // Usually a few hundred bytes: a small allocation, unlike a buffer of READ_AHEAD bytes.
        this.pending = read[n..].to_vec();
        Poll::Ready(Ok(()))
    }
}

impl<I: Write + Unpin> Write for ReadAhead<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::mem::MaybeUninit;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use hyper::rt::{Read, ReadBuf, ReadBufCursor};

    use super::ReadAhead;

    /// Bytes that arrive in the given pieces, one piece (or what fits of it) per read.
    struct Arrivals {
        pieces: Vec<Vec<u8>>,
        reads: usize,
    }

    impl Read for Arrivals {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            if let Some(piece) = this.pieces.first_mut() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    this.pieces.remove(0);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Read with a buffer of `size` bytes; what came.
    fn read(io: &mut ReadAhead<Arrivals>, size: usize) -> Vec<u8> {
        let mut storage = vec![MaybeUninit::uninit(); size];
        let mut buf = ReadBuf::uninit(&mut storage);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut *io).poll_read(&mut cx, buf.unfilled()).is_ready());
        buf.filled().to_vec()
    }

    fn reader(pieces: &[&[u8]]) -> ReadAhead<Arrivals> {
        ReadAhead::new(Arrivals { pieces: pieces.iter().map(|p| p.to_vec()).collect(), reads: 0 })
    }

    #[test]
    fn a_head_checked_for_the_preface_is_read_once() {
        let head = b"GET / HTTP/1.1\r\nhost: example.com\r\nuser-agent: test\r\n\r\n";
        let mut io = reader(&[head]);
        let first = read(&mut io, 24);
        let rest = read(&mut io, 8192);
        assert_eq!([first, rest].concat(), head);
        assert_eq!(io.io.reads, 1);
        assert!(io.pending.is_empty());
    }

    #[test]
    fn what_was_read_ahead_is_handed_out_in_order_across_small_reads() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut io = reader(&[&bytes, b"later"]);
        let mut got = Vec::new();
        while got.len() < bytes.len() {
            got.extend(read(&mut io, 10));
        }
        assert_eq!(got, bytes);
        assert_eq!(read(&mut io, 10), b"later");
        assert_eq!(io.io.reads, 2);
    }

    #[test]
    fn large_reads_pass_straight_through() {
        let mut io = reader(&[b"PRI * HTTP/2.0", b"\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(read(&mut io, 8192), b"PRI * HTTP/2.0");
        assert!(io.pending.capacity() == 0);
        assert_eq!(read(&mut io, 10), b"\r\n\r\nSM\r\n\r\n");
    }

    #[test]
    fn an_empty_first_read_is_the_end_of_the_stream() {
        let mut io = reader(&[]);
        assert!(read(&mut io, 24).is_empty());
        assert!(read(&mut io, 24).is_empty());
    }
}
