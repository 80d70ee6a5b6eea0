//! Connection IDs that name the worker owning the connection.
//!
//! With several workers, each has its own UDP socket in one `SO_REUSEPORT` group and the
//! supervisor's steering program picks the socket from the first byte of a packet's destination
//! connection ID. Every connection ID a worker issues starts with its index, so once the
//! client switches to the server's IDs (RFC 9000 §7.2), every packet reaches the same worker.

use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use quinn_proto::RandomConnectionIdGenerator;

/// Length of the connection IDs issued: one tag byte and seven random ones.
const CID_LEN: usize = 8;

/// Random connection IDs whose first byte is the worker's index.
pub(crate) struct WorkerTaggedCids {
    worker: u8,
    random: RandomConnectionIdGenerator,
}

impl WorkerTaggedCids {
    /// IDs for the worker at `worker` in the socket group.
    pub(crate) fn new(worker: u8) -> Self {
        Self { worker, random: RandomConnectionIdGenerator::new(CID_LEN) }
    }
}

impl ConnectionIdGenerator for WorkerTaggedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let random = self.random.generate_cid();
        let mut bytes = [0u8; CID_LEN];
        bytes.copy_from_slice(&random);
        bytes[0] = self.worker;
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_starts_with_the_worker_index() {
        let mut cids = WorkerTaggedCids::new(3);
        let a = cids.generate_cid();
        let b = cids.generate_cid();
        assert_eq!((a[0], b[0]), (3, 3));
        assert_eq!(a.len(), CID_LEN);
        assert_ne!(a, b);
    }
}
