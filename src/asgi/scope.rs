//! The ASGI HTTP connection scope (ASGI HTTP spec 2.3, "HTTP Connection Scope"), built the way
//! uvicorn builds it so that applications see the same values.

use std::borrow::Cow;

use http::request::Parts;
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::net::{ConnInfo, PeerAddr};

/// Client address and scheme after proxy headers were applied.
pub(crate) struct Origin<'a> {
    /// `(host, port)` of the client, if known.
    pub(crate) client: Option<(Cow<'a, str>, u16)>,
    /// `http` or `https`.
    pub(crate) scheme: &'a str,
}

/// Build the scope dict of one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    parts: &Parts,
    conn: &ConnInfo,
    origin: &Origin<'_>,
    root_path: &str,
    state: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.3"))?;
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), http_version(py, parts.version))?;
    scope.set_item(intern!(py, "server"), server_tuple(py, conn)?)?;
    match &origin.client {
        Some((host, port)) => scope.set_item(intern!(py, "client"), (host.as_ref(), *port))?,
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    let scheme = match origin.scheme {
        "http" => intern!(py, "http").clone(),
        "https" => intern!(py, "https").clone(),
        other => PyString::new(py, other),
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
    scope.set_item(intern!(py, "method"), method(py, &parts.method))?;
    scope.set_item(intern!(py, "root_path"), root_path)?;

    // uvicorn: path = root_path + unquote(raw path), raw_path = root_path + raw path.
    let raw_path = parts.uri.path().as_bytes();
    let decoded = percent_decode(raw_path).decode_utf8_lossy();
    if root_path.is_empty() {
        scope.set_item(intern!(py, "path"), decoded.as_ref())?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
    } else {
        scope.set_item(intern!(py, "path"), [root_path, decoded.as_ref()].concat())?;
        let full_raw = [root_path.as_bytes(), raw_path].concat();
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &full_raw))?;
    }
    let query = parts.uri.query().unwrap_or("");
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query.as_bytes()))?;
    scope.set_item(intern!(py, "headers"), headers(py, &parts.headers)?)?;
    scope.set_item(intern!(py, "state"), state.copy()?)?;
    Ok(scope)
}

fn http_version(py: Python<'_>, version: http::Version) -> &Bound<'_, PyString> {
    match version {
        http::Version::HTTP_10 => intern!(py, "1.0"),
        http::Version::HTTP_2 => intern!(py, "2"),
        http::Version::HTTP_3 => intern!(py, "3"),
        _ => intern!(py, "1.1"),
    }
}

fn method<'py>(py: Python<'py>, method: &http::Method) -> Bound<'py, PyString> {
    match *method {
        http::Method::GET => intern!(py, "GET").clone(),
        http::Method::POST => intern!(py, "POST").clone(),
        http::Method::HEAD => intern!(py, "HEAD").clone(),
        http::Method::PUT => intern!(py, "PUT").clone(),
        http::Method::DELETE => intern!(py, "DELETE").clone(),
        http::Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        http::Method::PATCH => intern!(py, "PATCH").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

fn server_tuple<'py>(py: Python<'py>, conn: &ConnInfo) -> PyResult<Bound<'py, PyTuple>> {
    match &conn.server {
        PeerAddr::Ip(addr) => (addr.ip().to_string(), addr.port()).into_pyobject(py),
        PeerAddr::Unix(path) => (path.as_str(), py.None()).into_pyobject(py),
    }
}

/// Request headers as a list of `(name, value)` byte pairs; names arrive lowercased from hyper.
fn headers<'py>(py: Python<'py>, headers: &http::HeaderMap) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, value) in headers {
        let pair = PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?;
        list.append(pair)?;
    }
    Ok(list)
}

/// `host:port` of the client as uvicorn's access log shows it (empty when unknown).
pub(crate) fn client_label(origin: &Origin<'_>) -> String {
    match &origin.client {
        Some((host, port)) => format!("{host}:{port}"),
        None => String::new(),
    }
}
