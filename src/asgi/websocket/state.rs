//! What the application's callables, the handshake response and the socket task share.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use bytes::BytesMut;
use http::{HeaderMap, StatusCode};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio_tungstenite::tungstenite::Message;

use crate::asgi::messages::resolve;

/// Queued outgoing bytes above which `send()` waits for the client to read.
pub(super) const SEND_HIGH_WATER: usize = 64 * 1024;

/// How the application answered the handshake.
pub(super) enum Decision {
    /// `websocket.accept`: switch protocols, with the chosen subprotocol and extra headers.
    Accept { subprotocol: Option<String>, headers: HeaderMap },
    /// Refuse with a bare status: 403 for `websocket.close`, 500 when the app gave no answer.
    Reject(StatusCode),
    /// The denial extension's response head; its body collects in `WsState::denial_body`.
    Respond { status: StatusCode, headers: HeaderMap },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stage {
    /// Waiting for the application's handshake answer.
    Connecting,
    /// The application is sending a denial response (`websocket.http.response.*`).
    Responding,
    /// Accepted: messages flow.
    Open,
    /// Closed, or refused.
    Closed,
}

/// State shared by the application's callables, the handshake response and the socket task.
pub(super) struct WsState {
    pub(super) stage: Stage,
    /// `websocket.connect` was handed to the app.
    pub(super) connect_delivered: bool,
    /// The handshake answer, until the response future takes it.
    pub(super) decision: Option<Decision>,
    pub(super) denial_body: BytesMut,
    /// Wakes the handshake response future.
    pub(super) head_waker: Option<Waker>,
    /// Client messages not yet received by the app (at most `max_queue`).
    pub(super) inbox: VecDeque<Message>,
    pub(super) max_queue: usize,
    /// Close code and reason once the connection ended (for `websocket.disconnect`).
    pub(super) closed: Option<(u16, String)>,
    /// A `receive()` waiting for a message (an asyncio future).
    pub(super) receive_waiter: Option<Py<PyAny>>,
    /// App messages not yet handed to tungstenite, and their size.
    pub(super) outbox: VecDeque<Message>,
    pub(super) outbox_bytes: usize,
    /// A `send()` waiting for the outbox to drain (an asyncio future).
    pub(super) send_waiter: Option<Py<PyAny>>,
    /// Close frame the application asked for, not yet sent.
    pub(super) app_close: Option<(u16, String)>,
    /// Wakes the socket task when the app queued something or made room in the inbox.
    pub(super) socket_waker: Option<Waker>,
}

pub(super) type WsRef = Rc<RefCell<WsState>>;

impl WsState {
    pub(super) fn new(max_queue: usize) -> WsRef {
        Rc::new(RefCell::new(Self {
            stage: Stage::Connecting,
            connect_delivered: false,
            decision: None,
            denial_body: BytesMut::new(),
            head_waker: None,
            inbox: VecDeque::new(),
            max_queue: max_queue.max(1),
            closed: None,
            receive_waiter: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            send_waiter: None,
            app_close: None,
            socket_waker: None,
        }))
    }

    pub(super) fn decide(&mut self, decision: Decision, stage: Stage) {
        self.decision = Some(decision);
        self.stage = stage;
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
    }

    pub(super) fn wake_socket(&mut self) {
        if let Some(waker) = self.socket_waker.take() {
            waker.wake();
        }
    }

    /// The next message for `receive()`, if one is available.
    pub(super) fn next_event(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            return Some(event(py, "websocket.connect", &[]));
        }
        if let Some(message) = self.inbox.pop_front() {
            self.wake_socket();
            return Some(match message {
                Message::Text(text) => {
                    event(py, "websocket.receive", &[("text", PyString::new(py, text.as_str()).into_any())])
                }
                Message::Binary(data) => {
                    event(py, "websocket.receive", &[("bytes", PyBytes::new(py, &data).into_any())])
                }
                _ => return None,
            });
        }
        let (code, reason) = self.closed.clone()?;
        Some(event(
            py,
            "websocket.disconnect",
            &[("code", code.into_pyobject(py).ok()?.into_any()), ("reason", PyString::new(py, &reason).into_any())],
        ))
    }

    /// The connection ended: remember why and wake whoever waits.
    pub(super) fn close(&mut self, code: u16, reason: String) -> (Option<Py<PyAny>>, Option<Py<PyAny>>) {
        if self.closed.is_none() {
            self.closed = Some((code, reason));
        }
        self.stage = Stage::Closed;
        if let Some(waker) = self.head_waker.take() {
            waker.wake();
        }
        (self.receive_waiter.take(), self.send_waiter.take())
    }
}

pub(super) fn event(py: Python<'_>, kind: &str, items: &[(&str, Bound<'_, PyAny>)]) -> Py<PyAny> {
    let message = PyDict::new(py);
    let _ = message.set_item(intern!(py, "type"), kind);
    for (key, value) in items {
        let _ = message.set_item(*key, value);
    }
    message.into_any().unbind()
}

/// Hand the next message to a parked `receive()`, and release a parked `send()` if room was made.
pub(super) fn deliver(ws: &WsRef) {
    let (receive, send) = {
        let mut state = ws.borrow_mut();
        let receive = if state.receive_waiter.is_some() {
            Python::attach(|py| state.next_event(py))
                .and_then(|message| state.receive_waiter.take().map(|f| (f, message)))
        } else {
            None
        };
        let send = if state.outbox_bytes <= SEND_HIGH_WATER || state.stage == Stage::Closed {
            state.send_waiter.take()
        } else {
            None
        };
        (receive, send)
    };
    if receive.is_none() && send.is_none() {
        return;
    }
    Python::attach(|py| {
        if let Some((future, message)) = receive {
            resolve(py, &future, message);
        }
        if let Some(future) = send {
            resolve(py, &future, py.None());
        }
    });
}

pub(super) fn resolve_closed(receive: Option<Py<PyAny>>, send: Option<Py<PyAny>>, ws: &WsRef) {
    if receive.is_none() && send.is_none() {
        return;
    }
    Python::attach(|py| {
        if let Some(future) = receive {
            let message = ws.borrow_mut().next_event(py).unwrap_or_else(|| py.None());
            resolve(py, &future, message);
        }
        if let Some(future) = send {
            resolve(py, &future, py.None());
        }
    });
}
