//! The ASGI HTTP connection scope (ASGI HTTP spec 2.3, "HTTP Connection Scope"), built the way
//! uvicorn builds it so that applications see the same values.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::field_values::has_token;
use crate::net::{ConnInfo, PeerAddr, TlsInfo};
use crate::request_fields::FieldsPresent;

/// Where the request comes from, after proxy headers were applied.
pub(crate) enum Client {
    /// The connection's peer.
    Peer(SocketAddr),
    /// A client named by a trusted proxy's `X-Forwarded-For`.
    Forwarded(String, u16),
    /// Unknown (a unix socket peer).
    Unknown,
}

/// Client address and scheme after proxy headers were applied.
pub(crate) struct Origin<'a> {
    /// The client (scope `client`).
    pub(crate) client: Client,
    /// `http` or `https` (scope `scheme`).
    pub(crate) scheme: &'a str,
    /// A `host` header value replacing the client's (`--forwarded-host`).
    pub(crate) host: Option<String>,
    /// The port of scope `server` as the client saw it (`--forwarded-port`).
    pub(crate) server_port: Option<u16>,
    /// A path prefix the proxy removed (`--forwarded-prefix`): put in front of `root_path`.
    pub(crate) prefix: Option<String>,
    /// The request's fields the server acts on.
    pub(crate) fields: FieldsPresent,
}

/// A scope dict with every key in place, copied for each request.
///
/// Copying a dict whose keys are already laid out skips the growth and re-hashing a new dict
/// goes through as 13 keys are added one by one; only the values that vary are then replaced.
pub(crate) struct ScopeTemplate {
    scope: Py<PyDict>,
    asgi: Py<PyDict>,
    root_path: String,
    /// PEM of the server's certificate, for the TLS extension.
    server_cert: Option<String>,
    /// The text of the last client IP address, and of the last local one.
    client_ip: IpText,
    server_ip: IpText,
    /// The bytes objects of the header names in [`COMMON_HEADER_NAMES`], in that order.
    header_names: Vec<Py<PyBytes>>,
}

/// Request header names common enough that the scope shares one immutable `bytes` object for
/// each instead of allocating it for every request: what browsers, HTTP clients and reverse
/// proxies send.
const COMMON_HEADER_NAMES: [&str; 24] = [
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "referer",
    "origin",
    "authorization",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "upgrade-insecure-requests",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "priority",
];

/// The Python string of the last IP address asked for.
///
/// Connections mostly come from the address of the one before (every connection from a reverse
/// proxy; a load generator) and reach the same local address: they share one string instead
/// of formatting the address (1,300 instructions with `Display`) and allocating it again.
#[derive(Default)]
struct IpText(RefCell<Option<(IpAddr, Py<PyString>)>>);

impl IpText {
    fn get<'py>(&self, py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
        let mut last = self.0.borrow_mut();
        if let Some((last_ip, text)) = last.as_ref()
            && *last_ip == ip
        {
            return text.bind(py).clone();
        }
        let text = PyString::new(py, &ip.to_string());
        *last = Some((ip, text.clone().unbind()));
        text
    }
}

impl ScopeTemplate {
    /// The template for a server with this `root_path`.
    pub(crate) fn new(py: Python<'_>, root_path: &str, server_cert: Option<&[u8]>) -> PyResult<Self> {
        let asgi = PyDict::new(py);
        asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
        asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.3"))?;
        let scope = PyDict::new(py);
        scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
        scope.set_item(intern!(py, "asgi"), py.None())?;
        scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        scope.set_item(intern!(py, "server"), py.None())?;
        scope.set_item(intern!(py, "client"), py.None())?;
        scope.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
        scope.set_item(intern!(py, "method"), intern!(py, "GET"))?;
        scope.set_item(intern!(py, "root_path"), root_path)?;
        scope.set_item(intern!(py, "path"), intern!(py, ""))?;
        scope.set_item(intern!(py, "raw_path"), py.None())?;
        scope.set_item(intern!(py, "query_string"), py.None())?;
        scope.set_item(intern!(py, "headers"), py.None())?;
        scope.set_item(intern!(py, "state"), py.None())?;
        Ok(Self {
            scope: scope.unbind(),
            asgi: asgi.unbind(),
            root_path: root_path.to_owned(),
            server_cert: server_cert.and_then(|der| pem("CERTIFICATE", der)),
            client_ip: IpText::default(),
            server_ip: IpText::default(),
            header_names: COMMON_HEADER_NAMES.iter().map(|name| PyBytes::new(py, name.as_bytes()).unbind()).collect(),
        })
    }

    /// Build the scope dict of one request.
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        conn_scope: &mut ConnScope,
        parts: &Parts,
        conn: &ConnInfo,
        origin: &Origin<'_>,
        state: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (scope, has_conn_values) = conn_scope.base(py, self, conn)?;
        scope.set_item(intern!(py, "asgi"), self.asgi.bind(py).copy()?)?;
        if parts.version != http::Version::HTTP_11 {
            scope.set_item(intern!(py, "http_version"), http_version(py, parts.version))?;
        }
        match (origin.server_port, &conn.server) {
            (Some(port), PeerAddr::Ip(addr)) => {
                scope.set_item(intern!(py, "server"), (self.server_ip.get(py, addr.ip()), port).into_pyobject(py)?)?;
            }
            _ if has_conn_values => {}
            _ => scope.set_item(intern!(py, "server"), conn_scope.server(py, conn, &self.server_ip)?)?,
        }
        if !(has_conn_values && matches!(origin.client, Client::Peer(_))) {
            scope.set_item(intern!(py, "client"), conn_scope.client(py, origin, &self.client_ip)?)?;
        }
        match origin.scheme {
            "http" => {}
            "https" => scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?,
            other => scope.set_item(intern!(py, "scheme"), PyString::new(py, other))?,
        }
        if parts.method != http::Method::GET {
            scope.set_item(intern!(py, "method"), method(py, &parts.method))?;
        }
        // uvicorn: path = root_path + unquote(raw path), raw_path = root_path + raw path.
        let raw_path = parts.uri.path().as_bytes();
        let decoded = percent_decode(raw_path).decode_utf8_lossy();
        let root_path = match &origin.prefix {
            Some(prefix) => {
                let root = [prefix.as_str(), self.root_path.as_str()].concat();
                scope.set_item(intern!(py, "root_path"), &root)?;
                std::borrow::Cow::Owned(root)
            }
            None => std::borrow::Cow::Borrowed(self.root_path.as_str()),
        };
        if root_path.is_empty() {
            scope.set_item(intern!(py, "path"), decoded.as_ref())?;
            scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
        } else {
            scope.set_item(intern!(py, "path"), [root_path.as_ref(), decoded.as_ref()].concat())?;
            let full_raw = [root_path.as_bytes(), raw_path].concat();
            scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &full_raw))?;
        }
        let query = parts.uri.query().unwrap_or("");
        scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query.as_bytes()))?;
        let mut authority_host = None;
        if matches!(parts.version, http::Version::HTTP_2 | http::Version::HTTP_3)
            && !parts.headers.contains_key(http::header::HOST)
        {
            // HTTP/2 and HTTP/3 carry the host in `:authority` (RFC 9113 §8.3.1, RFC 9114
            // §4.3.1); applications read `host`.
            let authority = parts.uri.authority().map(|a| a.as_str());
            authority_host = origin.host.as_deref().or(authority);
        }
        let headers =
            self.headers(py, &mut conn_scope.pairs, &parts.headers, origin.host.as_deref(), authority_host)?;
        scope.set_item(intern!(py, "headers"), headers)?;
        scope.set_item(intern!(py, "state"), state.copy()?)?;
        let extensions = PyDict::new(py);
        // The server sends the named file itself (ASGI "Path Send" extension).
        extensions.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
        if let Some(info) = &conn.tls {
            extensions.set_item(intern!(py, "tls"), conn_scope.tls(py, info, self.server_cert.as_deref())?)?;
        }
        if parts.version == http::Version::HTTP_3 {
            // 103 responses (RFC 8297): only the HTTP/3 writer can send informational responses.
            extensions.set_item(intern!(py, "http.response.early_hint"), PyDict::new(py))?;
        }
        if can_send_trailers(parts, origin.fields) {
            extensions.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
        }
        scope.set_item(intern!(py, "extensions"), extensions)?;
        Ok(scope)
    }

    /// Request headers as a list of `(name, value)` byte pairs; names arrive lowercased from
    /// hyper. `host`, when given, replaces the value of the `host` header; `authority_host`,
    /// when given, comes first as a `host` header.
    ///
    /// The list is made at its length (the number of field names; hyper's iterator reports no
    /// more), not grown by appends. A pair the connection's previous request had at the same
    /// place is that request's (see [`RepeatedPairs`]).
    fn headers<'py>(
        &self,
        py: Python<'py>,
        repeated: &mut RepeatedPairs,
        headers: &http::HeaderMap,
        host: Option<&str>,
        authority_host: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        let first = authority_host.map(|host| ("host", host.as_bytes()));
        let fields = headers.iter().map(|(name, value)| {
            let value = match host {
                Some(host) if name == http::header::HOST => host.as_bytes(),
                _ => value.as_bytes(),
            };
            (name.as_str(), value)
        });
        let mut count = 0;
        let list = PyList::new(
            py,
            first.into_iter().chain(fields).map(|(name, value)| {
                count += 1;
                repeated.pair(py, count - 1, name, value, || self.header_name(py, name))
            }),
        );
        repeated.0.truncate(count);
        list
    }

    /// The shared bytes object of a common header name, else a new one.
    fn header_name<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyBytes> {
        match COMMON_HEADER_NAMES.iter().position(|common| *common == name) {
            Some(index) => self.header_names[index].bind(py).clone(),
            None => PyBytes::new(py, name.as_bytes()),
        }
    }
}

impl ScopeTemplate {
    /// Turn an HTTP scope into a WebSocket one: `type`, `spec_version` 2.4, `subprotocols`, no
    /// `method`, and the `websocket.http.response` (denial) extension instead of HTTP's.
    pub(crate) fn make_websocket(
        &self,
        py: Python<'_>,
        scope: &Bound<'_, PyDict>,
        subprotocols: Vec<String>,
    ) -> PyResult<()> {
        scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
        let asgi = PyDict::new(py);
        asgi.set_item(intern!(py, "version"), intern!(py, "3.0"))?;
        asgi.set_item(intern!(py, "spec_version"), intern!(py, "2.4"))?;
        scope.set_item(intern!(py, "asgi"), asgi)?;
        scope.del_item(intern!(py, "method"))?;
        scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
        let extensions = match scope.get_item(intern!(py, "extensions"))? {
            Some(extensions) => extensions.cast_into::<PyDict>()?,
            None => PyDict::new(py),
        };
        let http_only = [
            intern!(py, "http.response.trailers"),
            intern!(py, "http.response.pathsend"),
            intern!(py, "http.response.early_hint"),
        ];
        for http_only in http_only {
            if extensions.contains(http_only)? {
                extensions.del_item(http_only)?;
            }
        }
        extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
        scope.set_item(intern!(py, "extensions"), extensions)?;
        Ok(())
    }
}

/// The scope's `(name, value)` pairs of a connection's previous request, reused for a field line
/// that comes again the same at the same place: a client sends most of its fields unchanged on
/// every request of a connection (`host`, `user-agent`, `accept`, `cookie`, ...), and a pair is
/// immutable. Each one reused spares making a tuple and a `bytes` object and freeing them.
#[derive(Default)]
struct RepeatedPairs(Vec<Py<PyTuple>>);

impl RepeatedPairs {
    /// The pair at `index` of the request's list: the previous request's if it is `(name,
    /// value)`, else a new one (with the name `make_name` gives), kept in its place for the next.
    fn pair<'py>(
        &mut self,
        py: Python<'py>,
        index: usize,
        name: &str,
        value: &[u8],
        make_name: impl FnOnce() -> Bound<'py, PyBytes>,
    ) -> Bound<'py, PyTuple> {
        if let Some(pair) = self.0.get(index)
            && holds(pair.bind(py), name, value)
        {
            return pair.bind(py).clone();
        }
        let pair = PyTuple::new(py, [make_name(), PyBytes::new(py, value)]).expect("a tuple of two objects");
        match self.0.get_mut(index) {
            Some(slot) => *slot = pair.clone().unbind(),
            None => self.0.push(pair.clone().unbind()),
        }
        pair
    }
}

/// Whether `pair`, a pair [`RepeatedPairs::pair`] made, is `(name, value)` as bytes.
fn holds(pair: &Bound<'_, PyTuple>, name: &str, value: &[u8]) -> bool {
    let is = |index, expected: &[u8]| {
        // SAFETY: `pair` is a tuple of two items, both `bytes`, made by `RepeatedPairs::pair`.
        unsafe { pair.get_borrowed_item_unchecked(index).cast_unchecked::<PyBytes>().as_bytes() == expected }
    };
    is(1, value) && is(0, name.as_bytes())
}

/// Per-connection values of the scope, made once per connection.
#[derive(Default)]
pub(crate) struct ConnScope {
    server: Option<Py<PyAny>>,
    client: Option<Py<PyAny>>,
    tls: Option<Py<PyDict>>,
    pairs: RepeatedPairs,
    /// From a connection's second request on: the server's template with the connection's
    /// `server` and `client` in place, copied for each request instead of setting both.
    base: Option<Py<PyDict>>,
    /// Requests whose scope was built on this connection, up to 2.
    requests: u8,
}

impl ConnScope {
    /// A new scope dict to fill, and whether it holds the connection's `server` and (peer)
    /// `client` already.
    ///
    /// A connection's first request copies the server's template: made for a connection that
    /// ends after one request, the connection's own template would cost a copy more. The second
    /// makes it, and the keep-alive requests that follow copy it.
    fn base<'py>(
        &mut self,
        py: Python<'py>,
        template: &ScopeTemplate,
        conn: &ConnInfo,
    ) -> PyResult<(Bound<'py, PyDict>, bool)> {
        if let Some(base) = &self.base {
            return Ok((base.bind(py).copy()?, true));
        }
        self.requests += 1;
        if self.requests < 2 {
            return Ok((template.scope.bind(py).copy()?, false));
        }
        let base = template.scope.bind(py).copy()?;
        base.set_item(intern!(py, "server"), self.server(py, conn, &template.server_ip)?)?;
        let client = match conn.client {
            Some(addr) => self.peer_client(py, addr, &template.client_ip)?,
            None => py.None().into_bound(py),
        };
        base.set_item(intern!(py, "client"), client)?;
        let scope = base.copy()?;
        self.base = Some(base.unbind());
        Ok((scope, true))
    }

    /// The ASGI TLS extension dict of a TLS connection.
    fn tls<'py>(&mut self, py: Python<'py>, info: &TlsInfo, server_cert: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(tls) = &self.tls {
            return Ok(tls.bind(py).clone());
        }
        let tls = PyDict::new(py);
        tls.set_item(intern!(py, "server_cert"), server_cert)?;
        let chain: Vec<String> = info.client_chain.iter().filter_map(|der| pem("CERTIFICATE", der)).collect();
        tls.set_item(intern!(py, "client_cert_chain"), chain)?;
        tls.set_item(intern!(py, "client_cert_name"), info.client_chain.first().and_then(|der| subject_name(der)))?;
        tls.set_item(intern!(py, "client_cert_error"), py.None())?;
        tls.set_item(intern!(py, "tls_version"), info.version)?;
        tls.set_item(intern!(py, "cipher_suite"), info.cipher_suite)?;
        self.tls = Some(tls.clone().unbind());
        Ok(tls)
    }

    fn server<'py>(&mut self, py: Python<'py>, conn: &ConnInfo, ip_text: &IpText) -> PyResult<Bound<'py, PyAny>> {
        if let Some(server) = &self.server {
            return Ok(server.bind(py).clone());
        }
        let server = match &conn.server {
            PeerAddr::Ip(addr) => (ip_text.get(py, addr.ip()), addr.port()).into_pyobject(py)?.into_any(),
            PeerAddr::Unix(path) => (path.as_str(), py.None()).into_pyobject(py)?.into_any(),
        };
        self.server = Some(server.clone().unbind());
        Ok(server)
    }

    fn client<'py>(&mut self, py: Python<'py>, origin: &Origin<'_>, ip_text: &IpText) -> PyResult<Bound<'py, PyAny>> {
        match &origin.client {
            Client::Peer(addr) => self.peer_client(py, *addr, ip_text),
            Client::Forwarded(host, port) => Ok((host.as_str(), *port).into_pyobject(py)?.into_any()),
            Client::Unknown => Ok(py.None().into_bound(py)),
        }
    }

    /// The `(host, port)` of the connection's peer, made once.
    fn peer_client<'py>(&mut self, py: Python<'py>, addr: SocketAddr, ip_text: &IpText) -> PyResult<Bound<'py, PyAny>> {
        if let Some(client) = &self.client {
            return Ok(client.bind(py).clone());
        }
        let client = (ip_text.get(py, addr.ip()), addr.port()).into_pyobject(py)?.into_any();
        self.client = Some(client.clone().unbind());
        Ok(client)
    }
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

/// `host:port` of the client as uvicorn's access log shows it (empty when unknown).
pub(crate) fn client_label(origin: &Origin<'_>) -> String {
    match &origin.client {
        Client::Peer(addr) => format!("{}:{}", addr.ip(), addr.port()),
        Client::Forwarded(host, port) => format!("{host}:{port}"),
        Client::Unknown => String::new(),
    }
}

/// Whether trailers sent by the app reach the client: always on HTTP/2 and HTTP/3; on HTTP/1.1 only in a
/// chunked response to a client that said `TE: trailers` (RFC 9112 §7.1.2, RFC 9110 §10.1.4).
fn can_send_trailers(parts: &Parts, fields: FieldsPresent) -> bool {
    match parts.version {
        http::Version::HTTP_2 | http::Version::HTTP_3 => true,
        http::Version::HTTP_11 => fields.te() && has_token(&parts.headers, &http::header::TE, "trailers"),
        _ => false,
    }
}

/// PEM text of a DER object.
fn pem(label: &str, der: &[u8]) -> Option<String> {
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, der).ok()
}

/// The RFC 4514 distinguished name of a certificate's subject.
fn subject_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der).ok().map(|cert| cert.tbs_certificate.subject.to_string())
}
