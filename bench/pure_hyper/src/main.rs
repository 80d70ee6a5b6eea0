//! `pure-hyper`: the physical limit of the `hello` benchmark rows.
//!
//! A hyper 1.x HTTP/1.1 server on a tokio current-thread runtime (one thread, no Python) that
//! answers every request with exactly the bytes tricorn sends for `bench.apps:hello`:
//!
//! ```text
//! HTTP/1.1 200 OK
//! server: tricorn
//! content-type: text/plain
//! content-length: 13
//! date: <now>
//!
//! Hello, world!
//! ```
//!
//! hyper writes the headers in insertion order and appends `date` itself (and `connection:
//! close` when the client asked for it), as it does inside tricorn.
//!
//! Usage: `pure_hyper [--host 127.0.0.1] [--port 8000]`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"Hello, world!";

/// The answer to every request: tricorn's hello response, header for header.
async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = response.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("tricorn"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("13"));
    Ok(response)
}

/// `--host H --port P` from the command line (defaults 127.0.0.1:8000).
fn listen_address() -> Result<SocketAddr, String> {
    let mut host = String::from("127.0.0.1");
    let mut port = String::from("8000");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => host = value,
            "--port" => port = value,
            _ => return Err(format!("unknown option {flag} (usage: pure_hyper [--host H] [--port P])")),
        }
    }
    format!("{host}:{port}").parse().map_err(|e| format!("bad address {host}:{port}: {e}"))
}

/// Accept connections forever; each one is served by hyper's HTTP/1.1 connection (keep-alive).
/// Only a failed bind ends it.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    loop {
        // a connection aborted before it was accepted (or one that fails set_nodelay) is skipped
        let Ok((stream, _)) = listener.accept().await else { continue };
        if stream.set_nodelay(true).is_err() {
            continue;
        }
        let connection = http.serve_connection(TokioIo::new(stream), service_fn(hello));
        tokio::task::spawn_local(async move {
            // a client that resets its connection is not an error of the server
            let _ = connection.await;
        });
    }
}

fn main() {
    let addr = listen_address().unwrap_or_else(|e| {
        eprintln!("pure_hyper: {e}");
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(e) = local.block_on(&runtime, serve(addr)) {
        eprintln!("pure_hyper: {e}");
        std::process::exit(1);
    }
}
