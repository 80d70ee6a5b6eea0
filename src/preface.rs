//! Telling HTTP/2 from HTTP/1.1 on a connection by its first bytes (`--http auto`).
//!
//! A client that speaks HTTP/2 starts with the connection preface, also over cleartext when it
//! knows in advance that the server speaks HTTP/2 (RFC 9113 §3.3, §3.4); anything else is taken
//! for HTTP/1.1, as hyper-util's auto builder does. The check runs over TLS too, so a client
//! that negotiated neither protocol by ALPN is served as well.
//!
//! hyper-util's builder reads the first 24 bytes (the length of the preface) into a buffer of
//! that size and hands them to hyper, whose HTTP/1.1 reader then finds its 8 KiB buffer 24 bytes
//! short of a full read and grows it to 16 KiB with an 8 KiB copy: per new connection a second
//! `read` system call, a reallocation and twice the buffer memory. [`DetectProtocol`] asks for
//! up to [`READ_AHEAD`] bytes at once, usually the whole first request head, and [`Prefaced`]
//! replays them to hyper in one piece.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBuf, ReadBufCursor};

use crate::write_through::write_through;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much the first read asks for: hyper's initial HTTP/1.1 read buffer.
const READ_AHEAD: usize = 8192;

/// The protocol a connection's first bytes announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Reads the first bytes of a connection until they tell its protocol; resolves to the protocol
/// and the I/O that replays those bytes.
pub(crate) struct DetectProtocol<I> {
    io: Option<I>,
    read: Vec<u8>,
    cancelled: bool,
}

impl<I> DetectProtocol<I> {
    /// Detect the protocol of `io`, from which nothing was read yet.
    pub(crate) fn new(io: I) -> Self {
        Self { io: Some(io), read: Vec::new(), cancelled: false }
    }

    /// Give up waiting (server shutdown, idle connection): the next poll fails with
    /// `ErrorKind::Interrupted`.
    pub(crate) fn cancel(&mut self) {
        self.cancelled = true;
    }
}

/// What `read` so far says: `None` while it is a strict beginning of the preface.
fn protocol_of(read: &[u8], at_end: bool) -> Option<Protocol> {
    let n = read.len().min(PREFACE.len());
    if at_end || read[..n] != PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

impl<I: Read + Unpin> Future for DetectProtocol<I> {
    type Output = io::Result<(Protocol, Prefaced<I>)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.cancelled {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::Interrupted, "protocol detection cancelled")));
        }
        let io = this.io.as_mut().expect("DetectProtocol polled after it resolved");
        loop {
            // Uninitialised: the reader only writes into it. The bytes read are then copied out,
            // so a connection keeps an allocation of their size, not of READ_AHEAD.
            let mut ahead = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
            let mut buf = ReadBuf::uninit(&mut ahead[..READ_AHEAD - this.read.len()]);
            ready!(Pin::new(&mut *io).poll_read(cx, buf.unfilled()))?;
            let fresh = buf.filled();
            this.read.extend_from_slice(fresh);
            if let Some(protocol) = protocol_of(&this.read, fresh.is_empty()) {
                let io = this.io.take().expect("checked above");
                let prefaced = Prefaced { io, pending: std::mem::take(&mut this.read), start: 0 };
                return Poll::Ready(Ok((protocol, prefaced)));
            }
        }
    }
}

/// A connection's I/O that first replays the bytes its protocol was detected from.
pub(crate) struct Prefaced<I> {
    io: I,
    /// Bytes not replayed yet, from `start` on.
    pending: Vec<u8>,
    start: usize,
}

impl<I: Read + Unpin> Read for Prefaced<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.pending.len() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let rest = &this.pending[this.start..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.start += n;
        if this.start == this.pending.len() {
            this.pending = Vec::new();
            this.start = 0;
        }
        Poll::Ready(Ok(()))
    }
}

write_through!(Prefaced);

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io;
    use std::mem::MaybeUninit;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use hyper::rt::{Read, ReadBuf, ReadBufCursor};

    use super::{DetectProtocol, PREFACE, Prefaced, Protocol};

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

    fn detect(pieces: &[&[u8]]) -> (Protocol, Prefaced<Arrivals>) {
        let io = Arrivals { pieces: pieces.iter().map(|p| p.to_vec()).collect(), reads: 0 };
        let mut detect = DetectProtocol::new(io);
        match Pin::new(&mut detect).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result.unwrap(),
            Poll::Pending => panic!("the reader is always ready"),
        }
    }

    /// Read with a buffer of `size` bytes; what came.
    fn read(io: &mut Prefaced<Arrivals>, size: usize) -> Vec<u8> {
        let mut storage = vec![MaybeUninit::uninit(); size];
        let mut buf = ReadBuf::uninit(&mut storage);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut *io).poll_read(&mut cx, buf.unfilled()).is_ready());
        buf.filled().to_vec()
    }

    #[test]
    fn an_http1_head_is_read_once_and_replayed_whole() {
        let head = b"GET / HTTP/1.1\r\nhost: example.com\r\nuser-agent: test\r\n\r\n";
        let (protocol, mut io) = detect(&[head, b"next"]);
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(io.io.reads, 1);
        assert_eq!(read(&mut io, 8192), head);
        assert_eq!(read(&mut io, 8192), b"next");
    }

    #[test]
    fn the_preface_split_over_reads_is_http2() {
        let (protocol, mut io) = detect(&[&PREFACE[..5], &PREFACE[5..20], &[&PREFACE[20..], b"frames"].concat()]);
        assert_eq!(protocol, Protocol::Http2);
        assert_eq!(io.io.reads, 3);
        assert_eq!(read(&mut io, 8192), [PREFACE, b"frames"].concat());
    }

    #[test]
    fn a_near_miss_of_the_preface_is_http1() {
        let (protocol, mut io) = detect(&[b"PRI * HTTP/1.1\r\n\r\n"]);
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(read(&mut io, 8192), b"PRI * HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_short_first_read_that_stops_matching_is_http1_without_waiting() {
        let (protocol, io) = detect(&[b"GET", b" / HTTP/1.1\r\n\r\n"]);
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(io.io.reads, 1);
    }

    #[test]
    fn the_end_of_the_stream_is_http1_with_nothing_to_replay() {
        let (protocol, mut io) = detect(&[&PREFACE[..10]]);
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(read(&mut io, 8192), &PREFACE[..10]);
        assert!(read(&mut io, 8192).is_empty());
    }

    #[test]
    fn replayed_bytes_come_in_order_across_small_reads() {
        let bytes: Vec<u8> = (0..=255).collect();
        let (_, mut io) = detect(&[&bytes]);
        let mut got = Vec::new();
        while got.len() < bytes.len() {
            got.extend(read(&mut io, 10));
        }
        assert_eq!(got, bytes);
        assert!(io.pending.is_empty());
    }

    #[test]
    fn a_cancelled_detection_is_interrupted() {
        let mut detect = DetectProtocol::new(Arrivals { pieces: vec![], reads: 0 });
        detect.cancel();
        let Poll::Ready(Err(e)) = Pin::new(&mut detect).poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("a cancelled detection ends at once with an error");
        };
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    }
}
