//! Listening sockets handed over by Python, and the accept loop.
//!
//! Python binds the sockets (so `--uds`, `--fd` and a future supervisor share one code path);
//! the server duplicates each fd, finds the family with `getsockname` instead of assuming it,
//! and accepts connections on the loop-thread runtime.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::runtime::io::Registered;
use crate::runtime::timer::Sleep;

/// An address on either side of a connection.
#[derive(Clone, Debug)]
pub(crate) enum PeerAddr {
    /// A TCP peer.
    Ip(SocketAddr),
    /// A unix socket, named by its path (empty when unnamed).
    Unix(String),
}

/// What the server knows about one connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The local end (scope `server`).
    pub(crate) server: PeerAddr,
    /// The remote end; `None` for unix sockets (scope `client`).
    pub(crate) client: Option<SocketAddr>,
    /// What the TLS handshake settled, for TLS connections.
    pub(crate) tls: Option<TlsInfo>,
}

/// The TLS session of a connection (ASGI TLS extension).
#[derive(Debug)]
pub(crate) struct TlsInfo {
    /// Protocol version, as on the wire (`0x0304` for TLS 1.3).
    pub(crate) version: Option<u16>,
    /// Cipher suite, as on the wire.
    pub(crate) cipher_suite: Option<u16>,
    /// The client's certificate chain (DER), leaf first; empty without a client certificate.
    pub(crate) client_chain: Vec<Vec<u8>>,
}

/// A listening socket of either family.
pub(crate) enum Listener {
    /// TCP over IPv4 or IPv6, with its address when it is bound to one IP address (every
    /// connection then has that local address, and `getsockname` per connection is saved).
    Tcp(Registered<mio::net::TcpListener>, Option<SocketAddr>),
    /// A unix stream socket.
    Unix(Registered<mio::net::UnixListener>, String),
}

/// A freshly accepted connection.
pub(crate) enum Accepted {
    /// A TCP connection and its peer.
    Tcp(mio::net::TcpStream, SocketAddr, SocketAddr),
    /// A unix socket connection.
    Unix(mio::net::UnixStream, String),
}

impl Listener {
    /// Adopt a duplicate of `fd`, a bound and listening stream socket.
    pub(crate) fn adopt(fd: RawFd) -> io::Result<Self> {
        // SAFETY: `dup` returns a new fd owned by nothing else, checked before use.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a valid fd we own.
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(dup) });
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        if let Some(address) = local.as_socket() {
            // Accepted connections inherit TCP_NODELAY from the listener (Linux copies the
            // listener's options into each new socket): one setsockopt instead of one each.
            socket.set_tcp_nodelay(true)?;
            let fixed_local = (!address.ip().is_unspecified()).then_some(address);
            let std_listener: std::net::TcpListener = socket.into();
            Ok(Self::Tcp(Registered::new(mio::net::TcpListener::from_std(std_listener))?, fixed_local))
        } else if local.is_unix() {
            let path = local.as_pathname().map(|p| p.display().to_string()).unwrap_or_default();
            // SAFETY: the fd is a unix stream socket we own; ownership moves to the listener.
            let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(socket.into_raw_fd()) };
            Ok(Self::Unix(Registered::new(mio::net::UnixListener::from_std(std_listener))?, path))
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "the socket is neither TCP nor a unix socket"))
        }
    }

    /// Accept the next connection, waiting for one.
    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(listener, fixed_local) => {
                let (stream, peer) = poll_fn(|cx| listener.poll_read_with(cx, mio::net::TcpListener::accept)).await?;
                let local = match fixed_local {
                    Some(local) => *local,
                    None => stream.local_addr()?,
                };
                Ok(Accepted::Tcp(stream, peer, local))
            }
            Self::Unix(listener, path) => {
                let (stream, _) = poll_fn(|cx| listener.poll_read_with(cx, mio::net::UnixListener::accept)).await?;
                Ok(Accepted::Unix(stream, path.clone()))
            }
        }
    }
}

/// Whether an accept error concerns only the connection being accepted.
///
/// Others (EMFILE, ENFILE, ENOBUFS, ENOMEM) mean the process is out of a resource: the accept
/// loop waits a little instead of spinning (the rationale of hyper 0.14's accept loop).
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Wait before accepting again after a resource error.
pub(crate) async fn backoff() {
    Sleep::until(Instant::now() + Duration::from_millis(100)).await;
}
