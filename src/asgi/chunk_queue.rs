//! The response body chunks an exchange holds until hyper takes them.

use std::collections::VecDeque;

use bytes::Bytes;

/// A first-in, first-out queue of body chunks that holds its first chunk inline.
///
/// Most responses queue one chunk at a time: hyper takes it before the app sends the next.
/// A `VecDeque` would allocate its buffer on the first push of every exchange; this queue
/// allocates only when a second chunk waits behind the first.
#[derive(Default)]
pub(crate) struct ChunkQueue {
    /// The oldest chunk; `None` only when `rest` is empty too.
    front: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl ChunkQueue {
    /// Queue `chunk` after the others.
    pub(crate) fn push_back(&mut self, chunk: Bytes) {
        if self.front.is_none() {
            self.front = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// The oldest chunk, taken out of the queue.
    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        let chunk = self.front.take();
        if chunk.is_some() {
            self.front = self.rest.pop_front();
        }
        chunk
    }

    /// Whether no chunk waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// Drop every chunk.
    pub(crate) fn clear(&mut self) {
        self.front = None;
        self.rest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_out_in_the_order_they_went_in() {
        let mut queue = ChunkQueue::default();
        assert!(queue.is_empty());
        for chunk in ["a", "b", "c"] {
            queue.push_back(Bytes::from_static(chunk.as_bytes()));
        }
        assert_eq!(queue.pop_front().as_deref(), Some(&b"a"[..]));
        queue.push_back(Bytes::from_static(b"d"));
        let rest: Vec<_> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(rest, [&b"b"[..], b"c", b"d"]);
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn a_cleared_queue_is_empty_and_takes_new_chunks() {
        let mut queue = ChunkQueue::default();
        queue.push_back(Bytes::from_static(b"a"));
        queue.push_back(Bytes::from_static(b"b"));
        queue.clear();
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
        queue.push_back(Bytes::from_static(b"c"));
        assert_eq!(queue.pop_front().as_deref(), Some(&b"c"[..]));
        assert!(queue.is_empty());
    }
}
