//! Steering QUIC datagrams to workers by connection ID.
//!
//! Each worker serves HTTP/3 on its own UDP socket; the sockets share one `SO_REUSEPORT` group,
//! in worker order, and a classic BPF program attached to the group picks the socket of each
//! datagram: the first byte of the destination connection ID, modulo the number of workers.
//! Workers issue connection IDs whose first byte is their index (see `cid`), so every packet of a
//! connection reaches the worker that accepted it, whatever the client's address does; a client's
//! first Initial carries a random ID (RFC 9000 §7.2) and lands on a worker by that random byte,
//! the same one for each of its retransmissions.

use std::io;
use std::os::fd::RawFd;

use libc::{BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_MOD, BPF_RET, sock_filter};

/// The header form bit: set on long-header packets (RFC 9000 §17.2).
const LONG_HEADER: u32 = 0x80;
/// Offset of the destination connection ID in a long header: flags, version, ID length.
const LONG_DCID_OFFSET: u32 = 6;
/// Offset of the destination connection ID in a short header: flags (RFC 9000 §17.3).
const SHORT_DCID_OFFSET: u32 = 1;

fn statement(code: u32, k: u32) -> sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code: u16::try_from(code).expect("BPF opcodes fit in 16 bits"), jt, jf, k }
}

/// The program: `A = first byte of the destination connection ID; return A % workers`.
fn program(workers: u32) -> [sock_filter; 7] {
    [
        statement(BPF_LD | BPF_B | BPF_ABS, 0),
        // Long header: go on at 2; short header: jump to 4.
        jump(BPF_JMP | BPF_JSET | BPF_K, LONG_HEADER, 0, 2),
        statement(BPF_LD | BPF_B | BPF_ABS, LONG_DCID_OFFSET),
        statement(BPF_JMP | BPF_JA, 1),
        statement(BPF_LD | BPF_B | BPF_ABS, SHORT_DCID_OFFSET),
        statement(BPF_ALU | BPF_MOD | BPF_K, workers),
        statement(BPF_RET | BPF_A, 0),
    ]
}

/// Attach the steering program for `workers` workers to the reuseport group of `fd`.
pub(crate) fn steer_by_connection_id(fd: RawFd, workers: u32) -> io::Result<()> {
    if workers == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "at least one worker"));
    }
    let mut filter = program(workers);
    let prog =
        libc::sock_fprog { len: u16::try_from(filter.len()).expect("a short program"), filter: filter.as_mut_ptr() };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            libc::socklen_t::try_from(size_of::<libc::sock_fprog>()).expect("a small struct"),
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use socket2::{Domain, Socket, Type};

    use super::*;

    fn group(size: usize) -> Vec<UdpSocket> {
        let mut sockets = Vec::new();
        let mut addr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap();
        for _ in 0..size {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            addr = socket.local_addr().unwrap().as_socket().unwrap();
            let socket: UdpSocket = socket.into();
            socket.set_nonblocking(true).unwrap();
            sockets.push(socket);
        }
        sockets
    }

    /// Index of the socket that received one datagram.
    fn receiver(sockets: &[UdpSocket]) -> usize {
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            for (i, socket) in sockets.iter().enumerate() {
                if socket.recv(&mut buf).is_ok() {
                    return i;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no socket received the datagram");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn datagrams_go_to_the_worker_named_by_the_connection_id() {
        let sockets = group(3);
        steer_by_connection_id(sockets[0].as_raw_fd(), 3).unwrap();
        let target = sockets[0].local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for worker in [0u8, 1, 2, 1, 0, 2] {
            let mut short = [0x40u8, worker, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0];
            short[2] = worker.wrapping_mul(7);
            client.send_to(&short, target).unwrap();
            assert_eq!(receiver(&sockets), usize::from(worker), "short header for worker {worker}");
            let long = [0xc0u8, 0, 0, 0, 1, 8, worker, 1, 2, 3, 4, 5, 6, 7, 8, 0];
            client.send_to(&long, target).unwrap();
            assert_eq!(receiver(&sockets), usize::from(worker), "long header for worker {worker}");
        }
        // A random client-chosen ID picks by its first byte, modulo the group size.
        client.send_to(&[0xc0u8, 0, 0, 0, 1, 8, 200, 1, 2, 3, 4, 5, 6, 7, 8], target).unwrap();
        assert_eq!(receiver(&sockets), 200 % 3);
    }
}
