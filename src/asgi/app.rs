//! Starting the application for a request: scope, `receive`/`send` callables and the task.

use std::rc::Rc;

use http::HeaderMap;
use http::request::Parts;
use pyo3::prelude::*;

use super::access_log::AccessRecord;
use super::app_call::new_app_call;
use super::channels::{AccessInfo, Receive, Send};
use super::exchange::ExchangeRef;
use super::receive_type::new_receive;
use super::scope::{Client, ConnScope, Origin, client_label};
use super::send_type::new_send;
use super::websocket;
use crate::forwarded;
use crate::net::{ConnInfo, PeerAddr};
use crate::proxy_headers;
use crate::request_fields::FieldsPresent;
use crate::server::ServerState;
use crate::settings::{ProxyStyle, Settings};

/// Whether the connection's peer may set proxy headers (`--forwarded-allow-ips`).
fn peer_is_trusted(settings: &Settings, conn: &ConnInfo) -> bool {
    match (conn.client, &conn.server) {
        (Some(peer), _) => settings.trusted_hosts.is_trusted_ip(peer.ip()),
        (None, PeerAddr::Unix(path)) => settings.trusted_hosts.trusts_unix(path),
        (None, PeerAddr::Ip(_)) => settings.trusted_hosts.trusts_all(),
    }
}

/// Take client, scheme (and, where enabled, host, port and prefix) from a trusted proxy's headers.
fn apply_proxy_headers(settings: &Settings, headers: &HeaderMap, origin: &mut Origin<'_>) {
    let info = match settings.proxy_style {
        ProxyStyle::XForwarded => {
            if !origin.fields.x_forwarded() {
                return;
            }
            let is_websocket = matches!(origin.scheme, "ws" | "wss");
            let mut info = proxy_headers::forwarded_by_trusted_peer(&settings.trusted_hosts, headers, is_websocket);
            if settings.forwarded_host {
                info.host = forwarded::x_forwarded_host(headers);
            }
            info
        }
        ProxyStyle::Forwarded => {
            forwarded::rfc7239(&settings.trusted_hosts, headers, matches!(origin.scheme, "ws" | "wss"))
        }
    };
    if let Some(scheme) = info.scheme {
        origin.scheme = scheme;
    }
    if let Some((host, port)) = info.client {
        origin.client = Client::Forwarded(host, port);
    }
    if settings.forwarded_host {
        origin.host = info.host;
    }
    if settings.forwarded_port {
        origin.server_port = forwarded::x_forwarded_port(headers);
    }
    if settings.forwarded_prefix {
        origin.prefix = forwarded::x_forwarded_prefix(headers);
    }
}

/// Client, scheme and forwarded values of a request, whose fields include `fields`, proxy
/// headers applied.
pub(crate) fn request_origin<'a>(
    settings: &Settings,
    conn: &ConnInfo,
    scheme: &'a str,
    headers: &HeaderMap,
    fields: FieldsPresent,
) -> Origin<'a> {
    let mut origin = Origin {
        client: conn.client.map_or(Client::Unknown, Client::Peer),
        scheme,
        host: None,
        server_port: None,
        prefix: None,
        fields,
    };
    if settings.proxy_headers && peer_is_trusted(settings, conn) {
        apply_proxy_headers(settings, headers, &mut origin);
    }
    origin
}

/// Start the application for a WebSocket handshake (ASGI WebSocket spec, "Connection Scope").
pub(crate) fn start_websocket(
    py: Python<'_>,
    state: &Rc<ServerState>,
    conn: &ConnInfo,
    conn_scope: &mut ConnScope,
    scheme: &'static str,
    fields: FieldsPresent,
    parts: &mut Parts,
) -> PyResult<websocket::WsResponseFuture> {
    let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
    let origin = request_origin(&state.settings, conn, ws_scheme, &parts.headers, fields);
    let scope = state.scope_template.build(py, conn_scope, parts, conn, &origin, state.lifespan_state.bind(py))?;
    state.scope_template.make_websocket(py, &scope, websocket::subprotocols(&parts.headers))?;
    websocket::start(py, state, scope, parts)
}

/// Build the scope of a request from `origin` and run `app(scope, receive, send)` as a new task
/// on the loop.
pub(crate) fn start(
    py: Python<'_>,
    state: &Rc<ServerState>,
    conn: &ConnInfo,
    conn_scope: &mut ConnScope,
    origin: &Origin<'_>,
    parts: &Parts,
    exchange: &ExchangeRef,
) -> PyResult<()> {
    let settings = &state.settings;
    let scope = state.scope_template.build(py, conn_scope, parts, conn, origin, state.lifespan_state.bind(py))?;
    let (access, record) = match &settings.access_log_format {
        _ if !settings.access_log => (None, None),
        Some(format) => (None, Some(AccessRecord::new(state, format, parts, client_label(origin)))),
        None => (Some(AccessInfo::new(origin, parts, &settings.root_path)), None),
    };
    if let Some(record) = record {
        exchange.borrow_mut().access_record = Some(Box::new(record));
    }
    let receive = new_receive(py, Receive::new(exchange.clone(), state.clone()))?;
    let task_key = state.app_tasks.borrow_mut().insert(py.None());
    let send = new_send(py, Send::new(exchange.clone(), state.clone(), access, task_key)).inspect_err(|_| {
        state.app_tasks.borrow_mut().remove(task_key);
    })?;
    run_task(py, state, task_key, (scope.into_any(), receive, send))?;
    crate::runtime::count_app_start();
    Ok(())
}

/// Run `app(scope, receive, send)` as a new task ([`AppCall`](super::app_call)), tracked under
/// `task_key` (a placeholder already in `ServerState::app_tasks`, also known to `send`).
///
/// On Python 3.12+ the task starts eagerly ([`TaskSpawner`](super::task::TaskSpawner)): the
/// application may already have finished when this returns, its `send` having removed the key
/// and uncounted the task, which is why the task is counted first and only stored if its
/// placeholder is still there.
pub(crate) fn run_task<'py>(
    py: Python<'py>,
    state: &ServerState,
    task_key: usize,
    args: (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>),
) -> PyResult<()> {
    state.tasks.set(state.tasks.get() + 1);
    let task = new_app_call(state.app.bind(py), args, state.error_logger.bind(py)).and_then(|coroutine| {
        let context = state.fresh_context.as_ref().map(|context| context.bind(py).call0()).transpose()?;
        state.task_spawner.spawn(py, coroutine.unbind(), context)
    });
    let mut app_tasks = state.app_tasks.borrow_mut();
    match task {
        Ok(task) => {
            if let Some(slot) = app_tasks.get_mut(task_key)
                && slot.is_none(py)
            {
                *slot = task;
            }
            Ok(())
        }
        // The application ran eagerly and raised past its task (`SystemExit`, say): its
        // `AppCall` logged it and told `send` already.
        Err(_) if !app_tasks.contains(task_key) => Ok(()),
        Err(err) => {
            app_tasks.remove(task_key);
            state.tasks.set(state.tasks.get() - 1);
            Err(err)
        }
    }
}
