//! tricorn's native module: an HTTP server for ASGI applications, driven by the Python event
//! loop. The Python package (`python/tricorn`) holds the CLI, the configuration and lifespan;
//! this crate holds the network layer and the ASGI bridge. See `docs/architecture.md`.

mod asgi;
mod connection;
mod field_values;
mod forwarded;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http3;
mod last_response;
mod length_field_watch;
mod net;
mod preface;
mod proxy_headers;
mod request_checks;
mod request_fields;
mod runtime;
mod server;
mod settings;
mod tls;
mod watchdog;
mod write_through;

use pyo3::prelude::*;

/// The `tricorn._tricorn` extension module.
#[pymodule]
mod _tricorn {
    #[pymodule_export]
    use crate::asgi::awaitable::Ready;
    #[pymodule_export]
    use crate::asgi::first_step::first_step_call_soon;
    #[pymodule_export]
    use crate::asgi::websocket::{WsReceive, WsSend};
    #[pymodule_export]
    use crate::server::{ClientDisconnected, ConfigError, NativeServer, steer_quic_by_connection_id};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("AppCall", crate::asgi::app_call::app_call_type(m.py())?)?;
        m.add("Done", crate::asgi::awaitable::done_type(m.py())?)?;
        m.add("Receive", crate::asgi::receive_type::receive_type(m.py())?)?;
        m.add("Send", crate::asgi::send_type::send_type(m.py())?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("BUILD", BUILD)
    }

    /// How this extension was compiled: `TRICORN_BUILD` at build time (bench/pgo.py sets it
    /// for its profile-guided builds), else whether debug assertions are on.
    const BUILD: &str = match option_env!("TRICORN_BUILD") {
        Some(build) => build,
        None if cfg!(debug_assertions) => "debug",
        None => "optimised, no PGO",
    };
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
