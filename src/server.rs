//! The server object Python drives: listeners, connections, counters and shutdown.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;

use http::HeaderValue;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slab::Slab;

use crate::asgi::awaitable;
use crate::asgi::first_step::FirstSteps;
use crate::asgi::plain_access_log::PlainAccessLog;
use crate::asgi::response_fields::NameCache;
use crate::asgi::scope::ScopeTemplate;
use crate::asgi::task::TaskSpawner;
use crate::asgi::task_registry;
use crate::connection::{self, Protocols};
use crate::http3::{self, QuicConfigs};
use crate::net::{Accepted, ConnInfo, Listener, PeerAddr, backoff, is_connection_error};
use crate::runtime::io::{Registered, Stream};
use crate::runtime::{self, Runtime};
use crate::settings::{AltSvc, Settings};
use crate::tls;

pyo3::create_exception!(
    _tricorn,
    ClientDisconnected,
    pyo3::exceptions::PyOSError,
    "The client went away: raised by send() on a closed WebSocket (ASGI WebSocket spec 2.4)."
);

pyo3::create_exception!(
    _tricorn,
    ConfigError,
    pyo3::exceptions::PyValueError,
    "A setting the server cannot work with (a TLS file, a key that does not fit): one line for the user."
);

/// One open connection, as the server tracks it for shutdown.
struct ConnSlot {
    /// Runtime task serving it (for abort).
    task: Option<usize>,
    /// Wakes the task so it notices a graceful shutdown.
    waker: Option<Waker>,
}

/// State shared by the server and every connection and exchange.
pub(crate) struct ServerState {
    pub(crate) settings: Settings,
    /// The ASGI application, called once per request by its task ([`AppCall`](crate::asgi::app_call)).
    pub(crate) app: Py<PyAny>,
    /// Creates the task of each request.
    pub(crate) task_spawner: TaskSpawner,
    /// `loop.create_future`
    pub(crate) create_future: Py<PyAny>,
    pub(crate) access_logger: Py<PyAny>,
    /// Default access lines written without `logging`, while the logger allows it.
    pub(crate) plain_access_log: Option<PlainAccessLog>,
    pub(crate) error_logger: Py<PyAny>,
    /// Lifespan state, shallow-copied into each scope.
    pub(crate) lifespan_state: Py<PyDict>,
    /// The scope dict copied for each request.
    pub(crate) scope_template: ScopeTemplate,
    /// The shared already-done awaitable returned by `send()`.
    pub(crate) done: Py<PyAny>,
    /// Response header names the application sends as the same objects every time.
    pub(crate) response_names: NameCache,
    /// `contextvars.Context`, when each request gets a fresh context.
    pub(crate) fresh_context: Option<Py<PyAny>>,
    /// The asyncio tasks running the application, to cancel them on abort.
    pub(crate) app_tasks: RefCell<Slab<Py<PyAny>>>,
    /// TLS and HTTP versions, shared by every connection.
    pub(crate) protocols: Protocols,
    /// QUIC configuration, when HTTP/3 is on.
    quic: Option<QuicConfigs>,
    /// The `alt-svc` header added to HTTP/1.1 and HTTP/2 responses, once HTTP/3 listens.
    pub(crate) alt_svc: RefCell<Option<HeaderValue>>,
    /// Open connections.
    pub(crate) connections: Cell<usize>,
    /// Application tasks still running.
    pub(crate) tasks: Cell<usize>,
    /// Requests received since start.
    pub(crate) total_requests: Cell<u64>,
    shutting_down: Cell<bool>,
    conns: RefCell<Slab<ConnSlot>>,
    /// Accept loops waiting for a connection to close (`--limit-connections`).
    parked_acceptors: RefCell<Vec<Waker>>,
}

impl ServerState {
    /// Whether a graceful shutdown started.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Remember the waker of a connection task, to wake it when shutdown starts.
    pub(crate) fn park_connection(&self, key: usize, waker: &Waker) {
        if let Some(slot) = self.conns.borrow_mut().get_mut(key) {
            match &slot.waker {
                Some(parked) if parked.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
    }

    /// Count a new connection; returns its key in the registry.
    pub(crate) fn open_connection(&self) -> usize {
        self.connections.set(self.connections.get() + 1);
        self.conns.borrow_mut().insert(ConnSlot { task: None, waker: None })
    }

    /// Record the task serving connection `key`, so that `abort()` can cancel it.
    pub(crate) fn set_connection_task(&self, key: usize, task: usize) {
        if let Some(slot) = self.conns.borrow_mut().get_mut(key) {
            slot.task = Some(task);
        }
    }

    /// A connection closed.
    pub(crate) fn forget_connection(&self, key: usize) {
        let mut conns = self.conns.borrow_mut();
        if conns.contains(key) {
            conns.remove(key);
        }
        drop(conns);
        self.connections.set(self.connections.get().saturating_sub(1));
        if self.settings.limit_connections.is_some() {
            for waker in self.parked_acceptors.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }

    /// Wait until fewer than `--limit-connections` connections are open. Meanwhile new
    /// connections wait in the listen backlog (and, once it is full, the kernel drops their SYNs).
    async fn connection_capacity(&self) {
        let Some(limit) = self.settings.limit_connections else {
            return;
        };
        std::future::poll_fn(|cx| {
            if self.connections.get() < limit {
                return std::task::Poll::Ready(());
            }
            let mut parked = self.parked_acceptors.borrow_mut();
            if !parked.iter().any(|waker| waker.will_wake(cx.waker())) {
                parked.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await;
    }

    /// Log `message` at error level on `tricorn.error`.
    pub(crate) fn log_error(&self, py: Python<'_>, message: &str) {
        log_error(self.error_logger.bind(py), message);
    }

    /// Log `message` at warning level on `tricorn.error`.
    pub(crate) fn log_warning(&self, message: &str) {
        Python::attach(|py| {
            if let Err(err) = self.error_logger.call_method1(py, intern!(py, "warning"), (message,)) {
                err.write_unraisable(py, None);
            }
        });
    }

    /// Log `message` with the traceback of `err` on `tricorn.error`.
    pub(crate) fn log_exception(&self, py: Python<'_>, message: &str, err: &PyErr) {
        log_exception(self.error_logger.bind(py), message, err);
    }
}

/// Log `message` at error level on `logger`.
pub(crate) fn log_error(logger: &Bound<'_, PyAny>, message: &str) {
    if let Err(err) = logger.call_method1(intern!(logger.py(), "error"), (message,)) {
        err.write_unraisable(logger.py(), None);
    }
}

/// Log `message` with the traceback of `err` at error level on `logger`.
pub(crate) fn log_exception(logger: &Bound<'_, PyAny>, message: &str, err: &PyErr) {
    let py = logger.py();
    let kwargs = PyDict::new(py);
    // `into_value` attaches the traceback, which Python before 3.12 keeps apart from the value.
    let logged = kwargs
        .set_item(intern!(py, "exc_info"), err.clone_ref(py).into_value(py))
        .and_then(|()| logger.call_method(intern!(py, "error"), (message,), Some(&kwargs)));
    if let Err(err) = logged {
        err.write_unraisable(py, None);
    }
}

/// The native server: Python calls `drive()` whenever `fileno()` is readable.
#[pyclass(module = "tricorn._tricorn", unsendable)]
pub(crate) struct NativeServer {
    runtime: Rc<Runtime>,
    state: Rc<ServerState>,
    accept_tasks: Vec<usize>,
}

#[pymethods]
impl NativeServer {
    #[new]
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        event_loop: &Bound<'_, PyAny>,
        settings: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let parsed = Settings::from_dict(settings)?;
        let reset_contextvars = parsed.reset_contextvars;
        let runtime = runtime::current().map_err(|e| PyOSError::new_err(format!("cannot create the runtime: {e}")))?;
        let (tls, server_cert) = match &parsed.tls {
            Some(options) => {
                let (config, leaf) = tls::server_config(options, Protocols::alpn(parsed.http))
                    .map_err(|e| ConfigError::new_err(e.to_string()))?;
                (Some(config), Some(leaf))
            }
            None => (None, None),
        };
        let quic = match (&parsed.http3, &tls) {
            (None, _) => None,
            (Some(_), Some(_)) if !parsed.tls.as_ref().is_some_and(tls::TlsOptions::allows_tls13) => {
                return Err(ConfigError::new_err("--http3 needs TLS 1.3, which --ssl-version leaves out"));
            }
            (Some(http3), Some(tls)) => Some(http3::quic_configs(tls, http3).map_err(ConfigError::new_err)?),
            (Some(_), None) => {
                return Err(ConfigError::new_err("--http3 needs a certificate: add --ssl-certfile and --ssl-keyfile"));
            }
        };
        task_registry::install(py)?;
        let scope_template = ScopeTemplate::new(py, &parsed.root_path, server_cert.as_deref())?;
        let protocols = Protocols::new(&parsed, tls);
        let get = |key: &str| -> PyResult<Py<PyAny>> {
            settings
                .get_item(key)?
                .map(Bound::unbind)
                .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("missing setting {key:?}")))
        };
        let state = ServerState {
            settings: parsed,
            app,
            task_spawner: TaskSpawner::new(py, event_loop)?,
            create_future: event_loop.getattr(intern!(py, "create_future"))?.unbind(),
            access_logger: get("access_logger")?,
            plain_access_log: plain_access_log(settings)?,
            error_logger: get("error_logger")?,
            lifespan_state: get("state")?.bind(py).cast::<PyDict>()?.clone().unbind(),
            scope_template,
            done: awaitable::done(py)?,
            response_names: NameCache::default(),
            fresh_context: if reset_contextvars {
                Some(py.import(intern!(py, "contextvars"))?.getattr(intern!(py, "Context"))?.unbind())
            } else {
                None
            },
            app_tasks: RefCell::new(Slab::new()),
            protocols,
            quic,
            alt_svc: RefCell::new(None),
            connections: Cell::new(0),
            tasks: Cell::new(0),
            total_requests: Cell::new(0),
            shutting_down: Cell::new(false),
            conns: RefCell::new(Slab::new()),
            parked_acceptors: RefCell::new(Vec::new()),
        };
        Ok(Self { runtime, state: Rc::new(state), accept_tasks: Vec::new() })
    }

    /// Adopt a bound, listening socket and start accepting on it.
    fn listen(&mut self, fd: i32) -> PyResult<()> {
        let listener = Listener::adopt(fd)?;
        let state = self.state.clone();
        let id = runtime::spawn(accept_loop(listener, state));
        self.accept_tasks.push(id);
        Ok(())
    }

    /// Adopt a bound UDP socket and serve HTTP/3 on it.
    fn listen_quic(&mut self, fd: i32) -> PyResult<()> {
        let Some(configs) = &self.state.quic else {
            return Err(ConfigError::new_err("HTTP/3 is not configured"));
        };
        let (id, port) = http3::listen(&self.state, configs, fd)?;
        self.accept_tasks.push(id);
        let alt_svc = match &self.state.settings.alt_svc {
            AltSvc::Auto => Some(HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400")).expect("a valid header")),
            AltSvc::Off => None,
            AltSvc::Value(value) => Some(value.clone()),
        };
        // With several UDP sockets, the first one is announced.
        let mut announced = self.state.alt_svc.borrow_mut();
        if announced.is_none() {
            *announced = alt_svc;
        }
        Ok(())
    }

    /// The epoll fd to watch with `loop.add_reader`.
    fn fileno(&self) -> i32 {
        self.runtime.fileno()
    }

    /// Run ready I/O, timers and tasks; never blocks.
    fn drive(&self, py: Python<'_>) -> PyResult<()> {
        let mut first_steps = FirstSteps::collect();
        let driven = self.runtime.drive_with(|| first_steps.run(py));
        first_steps.finish(py)?;
        driven?;
        match &self.state.plain_access_log {
            Some(log) => log.flush(py),
            None => Ok(()),
        }
    }

    /// Stop accepting; the open connections go on as before.
    fn stop_accepting(&mut self) {
        for id in self.accept_tasks.drain(..) {
            self.runtime.executor.cancel(id);
        }
    }

    /// Stop accepting; close idle connections and the others once their response is done.
    fn shutdown(&mut self) {
        self.stop_accepting();
        self.state.shutting_down.set(true);
        let wakers: Vec<Waker> =
            self.state.conns.borrow_mut().iter_mut().filter_map(|(_, slot)| slot.waker.take()).collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Close every connection now and cancel the application tasks still running.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        self.shutdown();
        let tasks: Vec<usize> = self.state.conns.borrow().iter().filter_map(|(_, slot)| slot.task).collect();
        for id in tasks {
            self.runtime.executor.cancel(id);
        }
        let app_tasks: Vec<Py<PyAny>> = self.state.app_tasks.borrow().iter().map(|(_, t)| t.clone_ref(py)).collect();
        for task in app_tasks {
            task.call_method1(py, intern!(py, "cancel"), ("Task cancelled, timeout graceful shutdown exceeded",))?;
        }
        Ok(())
    }

    /// Open connections.
    #[getter]
    fn connections(&self) -> usize {
        self.state.connections.get()
    }

    /// Application tasks still running.
    #[getter]
    fn tasks(&self) -> usize {
        self.state.tasks.get()
    }

    /// Requests received since start.
    #[getter]
    fn total_requests(&self) -> u64 {
        self.state.total_requests.get()
    }
}

/// Attach the program that steers QUIC datagrams to workers by connection ID to the
/// `SO_REUSEPORT` group of the UDP socket `fd`, whose sockets are bound in worker order.
#[pyfunction]
pub(crate) fn steer_quic_by_connection_id(fd: i32, workers: u32) -> PyResult<()> {
    http3::steer_by_connection_id(fd, workers).map_err(PyErr::from)
}

async fn accept_loop(listener: Listener, state: Rc<ServerState>) {
    loop {
        state.connection_capacity().await;
        match listener.accept().await {
            Ok(Accepted::Tcp(stream, peer, local)) => {
                let info = ConnInfo { server: PeerAddr::Ip(local), client: Some(peer), tls: None };
                start_connection(&state, stream, info);
            }
            Ok(Accepted::Unix(stream, path)) => {
                let info = ConnInfo { server: PeerAddr::Unix(path), client: None, tls: None };
                start_connection(&state, stream, info);
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                state.log_warning(&format!("accept failed: {e}"));
                backoff().await;
            }
        }
    }
}

fn start_connection<S>(state: &Rc<ServerState>, stream: S, info: ConnInfo)
where
    S: Stream + 'static,
{
    let stream = match Registered::new_sole_descriptor(stream) {
        Ok(stream) => stream,
        Err(e) => {
            state.log_warning(&format!("cannot register connection: {e}"));
            return;
        }
    };
    let key = state.open_connection();
    let task = runtime::spawn(connection::serve(state.clone(), stream, info, key));
    state.set_connection_task(key, task);
}

/// Forgets a connection (HTTP or WebSocket) when the task serving it ends or is cancelled.
pub(crate) struct ConnectionGuard {
    pub(crate) state: Rc<ServerState>,
    pub(crate) key: usize,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.forget_connection(self.key);
    }
}

/// The writer of default access lines, when the Python side found the access logger in its
/// default configuration (`access_log_handler` is its handler, else `None`).
fn plain_access_log(settings: &Bound<'_, PyDict>) -> PyResult<Option<PlainAccessLog>> {
    let py = settings.py();
    let handler = settings.get_item(intern!(py, "access_log_handler"))?.filter(|h| !h.is_none());
    let (Some(handler), Some(logger), Some(phrases)) =
        (handler, settings.get_item(intern!(py, "access_logger"))?, settings.get_item(intern!(py, "http_phrases"))?)
    else {
        return Ok(None);
    };
    PlainAccessLog::new(&logger, &handler, phrases.cast::<PyDict>()?).map(Some)
}
