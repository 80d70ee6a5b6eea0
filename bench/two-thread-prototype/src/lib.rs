//! Two-thread ASGI prototype: tokio current_thread + hyper on a side thread,
//! asyncio (uvloop) on the main thread. Batch wake via eventfd or call_soon_threadsafe.
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::intern;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

struct Resp { status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>, body: Vec<u8> }

struct Req {
    method: hyper::Method,
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
    client: SocketAddr,
    server: SocketAddr,
    tx: oneshot::Sender<Resp>,
}

struct Shared {
    queue: Mutex<VecDeque<Req>>,
    woken: AtomicBool,
    efd: i32,
    cst: bool, // true => call_soon_threadsafe mode
    wake_cb: std::sync::OnceLock<Py<PyAny>>,
}

impl Shared {
    fn push(&self, r: Req) {
        self.queue.lock().unwrap().push_back(r);
        if !self.woken.swap(true, Ordering::AcqRel) {
            if !self.cst { let one: u64 = 1; unsafe { libc::write(self.efd, &one as *const u64 as *const _, 8) }; }
            else if let Some(cb) = self.wake_cb.get() { Python::attach(|py| { let _ = cb.call0(py); }) }
        }
    }
}

/// Already-completed awaitable: __await__ returns self, __next__ raises StopIteration(value).
#[pyclass]
struct Ready { v: Option<Py<PyAny>> }
#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> { slf }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> { slf }
    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let v = self.v.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((v,)))
    }
}

#[pyclass]
struct Receive { done: bool }
#[pymethods]
impl Receive {
    fn __call__(&mut self, py: Python<'_>) -> PyResult<Ready> {
        let d = PyDict::new(py);
        if !self.done {
            self.done = true;
            d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            d.set_item(intern!(py, "body"), PyBytes::new(py, b""))?;
            d.set_item(intern!(py, "more_body"), false)?;
        } else {
            d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        }
        Ok(Ready { v: Some(d.into_any().unbind()) })
    }
}

#[pyclass]
struct Send { tx: Option<oneshot::Sender<Resp>>, status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>, body: Vec<u8> }
#[pymethods]
impl Send {
    fn __call__(&mut self, py: Python<'_>, msg: &Bound<'_, PyDict>) -> PyResult<Ready> {
        let ty: String = msg.get_item(intern!(py, "type"))?.ok_or_else(|| PyValueError::new_err("no type"))?.extract()?;
        match ty.as_str() {
            "http.response.start" => {
                self.status = msg.get_item(intern!(py, "status"))?.ok_or_else(|| PyValueError::new_err("no status"))?.extract()?;
                if let Some(h) = msg.get_item(intern!(py, "headers"))? {
                    for item in h.try_iter()? {
                        let (k, v): (Vec<u8>, Vec<u8>) = item?.extract()?;
                        self.headers.push((k, v));
                    }
                }
            }
            "http.response.body" => {
                if let Some(b) = msg.get_item(intern!(py, "body"))? { self.body.extend_from_slice(b.cast::<PyBytes>()?.as_bytes()); }
                let more: bool = match msg.get_item(intern!(py, "more_body"))? { Some(m) => m.extract()?, None => false };
                if !more {
                    if let Some(tx) = self.tx.take() {
                        let _ = tx.send(Resp { status: self.status, headers: std::mem::take(&mut self.headers), body: std::mem::take(&mut self.body) });
                    }
                }
            }
            _ => return Err(PyValueError::new_err("bad message type")),
        }
        Ok(Ready { v: None })
    }
}

fn addr_tuple<'py>(py: Python<'py>, a: &SocketAddr) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [a.ip().to_string().into_pyobject(py)?.into_any(), a.port().into_pyobject(py)?.into_any()])
}

#[pyclass]
struct Server { shared: Arc<Shared>, app: Py<PyAny>, create_task: Py<PyAny>, pub_efd: i32, drains: std::sync::atomic::AtomicU64, reqs: std::sync::atomic::AtomicU64 }

#[pymethods]
impl Server {
    /// cst=false => eventfd mode (caller does loop.add_reader(server.fd, server.drain));
    /// cst=true => tokio thread takes the GIL and calls the set_wake() callable once per batch.
    #[new]
    #[pyo3(signature = (app, event_loop, port, cst=false))]
    fn new(py: Python<'_>, app: Py<PyAny>, event_loop: &Bound<'_, PyAny>, port: u16, cst: bool) -> PyResult<Self> {
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let shared = Arc::new(Shared { queue: Mutex::new(VecDeque::new()), woken: AtomicBool::new(false), efd, cst, wake_cb: Default::default() });
        let sh = shared.clone();
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        std::thread::Builder::new().name("tokio".into()).spawn(move || run_tokio(std_listener, sh))?;
        let create_task = event_loop.getattr(intern!(py, "create_task"))?.unbind();
        Ok(Server { shared, app, create_task, pub_efd: efd, drains: Default::default(), reqs: Default::default() })
    }
    /// cst mode: set the wake callable, e.g. functools.partial(loop.call_soon_threadsafe, server.drain)
    fn set_wake(&self, cb: Py<PyAny>) { let _ = self.shared.wake_cb.set(cb); }
    /// (drain callbacks, requests drained) -- to compute batch size
    fn stats(&self) -> (u64, u64) { (self.drains.load(Ordering::Relaxed), self.reqs.load(Ordering::Relaxed)) }
    #[getter]
    fn fd(&self) -> i32 { self.pub_efd }

    /// Reader callback on the Python thread: drain the queue, build scope, create a task per request.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        if !self.shared.cst { let mut buf = 0u64; unsafe { libc::read(self.shared.efd, &mut buf as *mut u64 as *mut _, 8) }; }
        self.shared.woken.store(false, Ordering::Release);
        let batch: VecDeque<Req> = std::mem::take(&mut *self.shared.queue.lock().unwrap());
        self.drains.fetch_add(1, Ordering::Relaxed); self.reqs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?; asgi.set_item("spec_version", "2.3")?;
        for r in batch {
            let s = PyDict::new(py);
            s.set_item(intern!(py, "type"), intern!(py, "http"))?;
            s.set_item(intern!(py, "asgi"), &asgi)?;
            s.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
            s.set_item(intern!(py, "server"), addr_tuple(py, &r.server)?)?;
            s.set_item(intern!(py, "client"), addr_tuple(py, &r.client)?)?;
            s.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
            s.set_item(intern!(py, "method"), r.method.as_str())?;
            s.set_item(intern!(py, "root_path"), intern!(py, ""))?;
            let raw = r.uri.path();
            s.set_item(intern!(py, "path"), percent_encoding::percent_decode_str(raw).decode_utf8_lossy().as_ref())?;
            s.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw.as_bytes()))?;
            s.set_item(intern!(py, "query_string"), PyBytes::new(py, r.uri.query().unwrap_or("").as_bytes()))?;
            let hl = PyList::empty(py);
            for (k, v) in r.headers.iter() {
                hl.append(PyTuple::new(py, [PyBytes::new(py, k.as_str().as_bytes()), PyBytes::new(py, v.as_bytes())])?)?;
            }
            s.set_item(intern!(py, "headers"), hl)?;
            s.set_item(intern!(py, "state"), PyDict::new(py))?;
            let recv = Py::new(py, Receive { done: false })?;
            let send = Py::new(py, Send { tx: Some(r.tx), status: 0, headers: Vec::new(), body: Vec::new() })?;
            let coro = self.app.call1(py, (s, recv, send))?;
            self.create_task.call1(py, (coro,))?;
        }
        Ok(())
    }
}

fn run_tokio(l: std::net::TcpListener, sh: Arc<Shared>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(l).unwrap();
        let server = listener.local_addr().unwrap();
        loop {
            let Ok((stream, client)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let sh = sh.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let sh = sh.clone();
                    async move {
                        let (parts, _body) = req.into_parts();
                        let (tx, rx) = oneshot::channel();
                        sh.push(Req { method: parts.method, uri: parts.uri, headers: parts.headers, client, server, tx });
                        let resp = match rx.await {
                            Ok(r) => {
                                let mut b = Response::builder().status(r.status);
                                for (k, v) in r.headers { b = b.header(k, v); }
                                b.body(Full::new(Bytes::from(r.body))).unwrap()
                            }
                            Err(_) => Response::builder().status(500).body(Full::new(Bytes::new())).unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}

#[pymodule]
fn twothread(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Server>()?;
    Ok(())
}
