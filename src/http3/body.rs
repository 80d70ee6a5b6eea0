//! The request body of an HTTP/3 request stream.

use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;

use crate::asgi::body::BodyError;

/// The receiving half of a request stream, read as body data.
pub(crate) struct RequestStreamBody {
    stream: RequestStream<h3_quinn::RecvStream, Bytes>,
    /// Data taken by the probe in [`RequestStreamBody::new`], handed out first.
    first: Option<Bytes>,
    finished: bool,
}

impl RequestStreamBody {
    /// Wrap the receiving half; looks once, without waiting, whether the body already ended, so
    /// that a request without a body (FIN with the headers) needs no reader task.
    pub(crate) fn new(stream: RequestStream<h3_quinn::RecvStream, Bytes>) -> Self {
        let mut body = Self { stream, first: None, finished: false };
        let mut cx = Context::from_waker(Waker::noop());
        match body.stream.poll_recv_data(&mut cx) {
            Poll::Ready(Ok(Some(mut data))) => body.first = Some(data.copy_to_bytes(data.remaining())),
            Poll::Ready(Ok(None)) => body.finished = true,
            // An error shows again on the next poll; pending registers the real waker then.
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
        body
    }

    /// The next chunk of body data, `None` at the end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        match self.stream.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut data))) => Poll::Ready(Some(Ok(data.copy_to_bytes(data.remaining())))),
            Poll::Ready(Ok(None)) => {
                self.finished = true;
                Poll::Ready(None)
            }
            // Reset by the client (RFC 9114 §4.1.1) or the connection was lost.
            Poll::Ready(Err(_)) => {
                self.finished = true;
                Poll::Ready(Some(Err(BodyError::BrokenOff)))
            }
        }
    }

    /// Whether the body is known to be over.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.finished && self.first.is_none()
    }
}
