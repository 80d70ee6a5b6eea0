//! Starting the application for a request: scope, `receive`/`send` callables and the task.

use std::borrow::Cow;
use std::rc::Rc;

use http::request::Parts;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::channels::{AccessInfo, Receive, Send};
use super::exchange::ExchangeRef;
use super::scope::{self, Origin};
use crate::net::ConnInfo;
use crate::proxy_headers;
use crate::server::ServerState;

/// Build the scope and run `app_runner(scope, receive, send)` as a new task on the loop.
pub(crate) fn start(
    py: Python<'_>,
    state: &Rc<ServerState>,
    conn: &ConnInfo,
    scheme: &'static str,
    parts: &Parts,
    exchange: &ExchangeRef,
) -> PyResult<()> {
    let settings = &state.settings;
    let mut origin = Origin {
        client: conn.client.map(|a| (Cow::Owned(a.ip().to_string()), a.port())),
        scheme,
    };
    if settings.proxy_headers {
        let peer = conn.client.map(|a| a.ip());
        let trusted = match peer {
            Some(ip) => settings.trusted_hosts.is_trusted_ip(ip),
            None => settings.trusted_hosts.trusts_all(),
        };
        if trusted {
            let peer_host = origin.client.as_ref().map(|(h, _)| h.to_string());
            let info =
                proxy_headers::forwarded_info(&settings.trusted_hosts, peer_host.as_deref(), &parts.headers, false);
            if let Some(s) = info.scheme {
                origin.scheme = s;
            }
            if let Some((host, port)) = info.client {
                origin.client = Some((Cow::Owned(host), port));
            }
        }
    }
    let scope = scope::build(
        py,
        parts,
        conn,
        &origin,
        &settings.root_path,
        state.lifespan_state.bind(py),
    )?;
    let access = settings
        .access_log
        .then(|| AccessInfo::new(&origin, parts, &settings.root_path));
    let receive = Py::new(py, Receive::new(exchange.clone(), state.clone()))?;
    let task_key = state.app_tasks.borrow_mut().insert(py.None());
    let send = Py::new(py, Send::new(exchange.clone(), state.clone(), access, task_key)).inspect_err(|_| {
        state.app_tasks.borrow_mut().remove(task_key);
    })?;
    let task = state
        .app_runner
        .call1(py, (scope, receive, send))
        .and_then(|coroutine| match &state.fresh_context {
            Some(context) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "context"), context.call0(py)?)?;
                state.create_task.call(py, (coroutine,), Some(&kwargs))
            }
            None => state.create_task.call1(py, (coroutine,)),
        });
    match task {
        Ok(task) => {
            if let Some(slot) = state.app_tasks.borrow_mut().get_mut(task_key) {
                *slot = task;
            }
            state.tasks.set(state.tasks.get() + 1);
            Ok(())
        }
        Err(err) => {
            state.app_tasks.borrow_mut().remove(task_key);
            Err(err)
        }
    }
}
