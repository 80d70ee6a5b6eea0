//! Noticing a `Content-Length` field line in what an HTTP/1.1 client sent, for the one case
//! hyper does not report: a request with both `Content-Length` and `Transfer-Encoding`.
//!
//! RFC 9112 §6.1: such a request "ought to be handled as an error"; a server "MAY reject" it or
//! frame the body by `Transfer-Encoding` alone, and "MUST close the connection" either way.
//! hyper takes the second branch: it drops `Content-Length` from the parsed head, reads the body
//! as chunked and closes after the response. It is a request-smuggling shape, so tricorn answers
//! 400 instead; the service asks [`LengthFieldSeen::take`] whether the bytes read since the
//! previous request's head held a `Content-Length` line whenever a request has
//! `Transfer-Encoding`.
//!
//! The scan looks for a line starting with `content-length:` (any case) in every read, including
//! one split across two reads. Body bytes read after a request started count too: a chunked
//! request following, on one connection, a body with such a line is refused as well. A head that
//! is missed (only possible when pipelined behind another request in one read) falls back to
//! hyper's handling, which still never serves what the `Content-Length` would have framed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBuf, ReadBufCursor};

use crate::write_through::write_through;

/// What the reader tells the service: a `Content-Length` line arrived since the last `take`.
/// Atomic only because hyper wants upgradable I/O to be `Send`; one thread uses it.
#[derive(Debug, Default)]
pub(crate) struct LengthFieldSeen(AtomicBool);

impl LengthFieldSeen {
    /// Whether a `Content-Length` line arrived since the last call; starts over.
    pub(crate) fn take(&self) -> bool {
        let seen = self.0.load(Ordering::Relaxed);
        if seen {
            self.0.store(false, Ordering::Relaxed);
        }
        seen
    }
}

/// The start of a `Content-Length` field line, lowercase (field names are case-insensitive,
/// RFC 9110 §5.1). No whitespace is allowed before the colon (RFC 9112 §5.1): hyper refuses that.
const FIELD_LINE: &[u8] = b"\ncontent-length:";

/// The connection's I/O, read through a scan for [`FIELD_LINE`].
pub(crate) struct LengthFieldWatch<I> {
    io: I,
    seen: Arc<LengthFieldSeen>,
    /// How many bytes of [`FIELD_LINE`] the previous read ended with.
    carried: usize,
}

impl<I> LengthFieldWatch<I> {
    /// Watch what is read from `io`, reporting to `seen`.
    pub(crate) fn new(io: I, seen: Arc<LengthFieldSeen>) -> Self {
        Self { io, seen, carried: 0 }
    }

    /// Whether `bytes`, following the previous read, hold a `Content-Length` line start.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut found = false;
        if self.carried > 0 {
            let rest = &FIELD_LINE[self.carried..];
            let n = rest.len().min(bytes.len());
            let continues = bytes[..n].eq_ignore_ascii_case(&rest[..n]);
            found = continues && n == rest.len();
            self.carried = if continues && !found { self.carried + n } else { 0 };
            if self.carried > 0 {
                return false;
            }
        }
        for at in memchr::memchr_iter(b'\n', bytes) {
            // Most lines start with another letter: one byte rules them out.
            if bytes.get(at + 1).is_some_and(|first| first.to_ascii_lowercase() != FIELD_LINE[1]) {
                continue;
            }
            let tail = &bytes[at..];
            if tail.len() >= FIELD_LINE.len() {
                found |= tail[..FIELD_LINE.len()].eq_ignore_ascii_case(FIELD_LINE);
            } else if tail.eq_ignore_ascii_case(&FIELD_LINE[..tail.len()]) {
                self.carried = tail.len();
            }
        }
        found
    }
}

impl<I: Read + Unpin> Read for LengthFieldWatch<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: the inner reader only initialises bytes of the unfilled part it is lent.
        let mut inner = ReadBuf::uninit(unsafe { buf.as_mut() });
        ready!(Pin::new(&mut this.io).poll_read(cx, inner.unfilled()))?;
        let read = inner.filled().len();
        if this.scan(inner.filled()) {
            this.seen.0.store(true, Ordering::Relaxed);
        }
        // SAFETY: the inner reader initialised these `read` bytes.
        unsafe { buf.advance(read) };
        Poll::Ready(Ok(()))
    }
}

write_through!(LengthFieldWatch);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{FIELD_LINE, LengthFieldSeen, LengthFieldWatch};

    /// Feed `reads` one after the other; whether each held a field line start.
    fn scan(reads: &[&[u8]]) -> Vec<bool> {
        let mut watch = LengthFieldWatch::new((), Arc::new(LengthFieldSeen::default()));
        reads.iter().map(|read| watch.scan(read)).collect()
    }

    #[test]
    fn finds_the_field_in_any_case() {
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"]), [true]);
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nCONTENT-LENGTH: 5\r\n\r\n"]), [true]);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\n\r\n"]), [false]);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), [false]);
        assert_eq!(scan(&[b"Content-Length: 5\r\n"]), [false], "not at a line start");
    }

    #[test]
    fn finds_the_field_split_across_reads() {
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\nCont", b"ent-Length: 5\r\n\r\n"]), [false, true]);
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\n", b"content-length: 5\r\n\r\n"]), [false, true]);
        assert_eq!(scan(&[b"POST / HTTP/1.1\r\n\n", b"content-length: 5\r\n"]), [false, true]);
        assert_eq!(scan(&[b"x\ncon", b"ten", b"t-length:"]), [false, false, true]);
        assert_eq!(scan(&[b"x\ncon", b"tent-type: a\r\n"]), [false, false]);
        assert_eq!(scan(&[b"x\ncon", b"tent-type\ncontent-length:"]), [false, true]);
    }

    #[test]
    fn any_split_into_three_reads_gives_the_same_answer() {
        let streams: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: x\r\n\ncontent-lengt\r\n",
            b"\n\ncOnTeNt-LeNgTh:\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 1\r\n\r\n",
        ];
        for stream in streams {
            let expected = stream.windows(FIELD_LINE.len()).any(|w| w.eq_ignore_ascii_case(FIELD_LINE));
            for i in 0..=stream.len() {
                for j in i..=stream.len() {
                    let found = scan(&[&stream[..i], &stream[i..j], &stream[j..]]).contains(&true);
                    assert_eq!(found, expected, "{:?} split at {i}, {j}", String::from_utf8_lossy(stream));
                }
            }
        }
    }
}
