//! The QUIC endpoint on a UDP socket handed over by Python, and its accept loop.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use quinn::Endpoint;

use super::config::QuicConfigs;
use super::connection;
use super::runtime::{LoopRuntime, LoopUdpSocket};
use crate::runtime;
use crate::server::ServerState;

/// Start an HTTP/3 endpoint on a duplicate of the bound UDP socket `fd`; returns the id of the
/// accept task and the socket's port.
pub(crate) fn listen(state: &Rc<ServerState>, configs: &QuicConfigs, fd: RawFd) -> io::Result<(usize, u16)> {
    // SAFETY: `dup` returns a new descriptor that nothing else owns, or -1 (checked).
    let owned = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if owned < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `owned` is a fresh descriptor this function owns; the socket takes it over.
    let socket = unsafe { UdpSocket::from_raw_fd(owned) };
    let port = socket.local_addr()?.port();
    let socket = Arc::new(LoopUdpSocket::new(socket)?);
    let endpoint = Endpoint::new_with_abstract_socket(
        configs.endpoint.clone(),
        Some(configs.server.clone()),
        socket,
        Arc::new(LoopRuntime),
    )?;
    Ok((runtime::spawn(accept_loop(endpoint, state.clone())), port))
}

async fn accept_loop(endpoint: Endpoint, state: Rc<ServerState>) {
    let Ok(local) = endpoint.local_addr() else { return };
    while let Some(incoming) = endpoint.accept().await {
        if state.is_shutting_down() {
            incoming.refuse();
            continue;
        }
        let key = state.open_connection();
        let task = runtime::spawn(connection::serve(state.clone(), incoming, local, key));
        state.set_connection_task(key, task);
    }
}
