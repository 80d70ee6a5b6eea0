//! ASGI 3 for HTTP: scope, `receive`/`send`, and the exchange between the connection and the app.

pub(crate) mod access_log;
pub(crate) mod app;
pub(crate) mod app_call;
pub(crate) mod awaitable;
pub(crate) mod body;
pub(crate) mod c_slots;
pub(crate) mod channels;
pub(crate) mod chunk_queue;
pub(crate) mod exchange;
pub(crate) mod first_step;
pub(crate) mod message_fields;
pub(crate) mod messages;
pub(crate) mod plain_access_log;
pub(crate) mod receive_type;
pub(crate) mod response_fields;
pub(crate) mod scope;
pub(crate) mod send_type;
pub(crate) mod service;
pub(crate) mod task;
pub(crate) mod task_registry;
pub(crate) mod thread_owned;
pub(crate) mod websocket;
