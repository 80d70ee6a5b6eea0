"""The Python side of the contract with `tricorn._tricorn`: the settings dict."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tricorn.logging import HTTP_PHRASES, plain_access_handler

if TYPE_CHECKING:
    from tricorn.config import Config


def build_settings(config: Config, state: dict[str, Any]) -> dict[str, Any]:
    """Return the `settings` dict for `NativeServer` from a loaded `config` and the lifespan `state`."""
    access_logger = logging.getLogger("tricorn.access")
    return {
        "root_path": config.root_path,
        "default_headers": list(config.encoded_headers),
        "date_header": config.date_header,
        "timeout_keep_alive": float(config.timeout_keep_alive),
        "timeout_header_read": float(config.timeout_header_read),
        "timeout_body_read": float(config.timeout_body_read),
        "timeout_tls_handshake": float(config.timeout_tls_handshake),
        "timeout_send": float(config.timeout_send),
        "limit_concurrency": config.limit_concurrency,
        "limit_connections": config.limit_connections,
        "h1_max_head_size": config.h11_max_incomplete_event_size,
        "access_log": config.access_log and access_logger.hasHandlers(),
        "access_log_format": config.access_log_format,
        "access_logger": access_logger,
        "access_log_handler": (
            plain_access_handler(access_logger) if config.access_log and config.access_log_format is None else None
        ),
        "http_phrases": HTTP_PHRASES,
        "error_logger": logging.getLogger("tricorn.error"),
        "proxy_headers": config.proxy_headers,
        "forwarded_allow_ips": config.trusted_hosts,
        "proxy_headers_style": config.proxy_headers_style,
        "forwarded_host": config.forwarded_host,
        "forwarded_port": config.forwarded_port,
        "forwarded_prefix": config.forwarded_prefix,
        "state": state,
        "limit_request_body": config.limit_request_body,
        "reset_contextvars": config.reset_contextvars,
        "http": config.http_versions,
        "http2": dict(config.http2_settings),
        "tls": config.tls_settings,
        "http3": config.http3_settings,
        "alt_svc": config.http3_alt_svc,
        "ws": config.ws != "none",
        "ws_settings": {
            "max_size": config.ws_max_size,
            "max_queue": config.ws_max_queue,
            "ping_interval": config.ws_ping_interval,
            "ping_timeout": config.ws_ping_timeout,
            "per_message_deflate": config.ws_per_message_deflate,
        },
    }
