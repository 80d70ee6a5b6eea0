"""A real nginx (Debian's /usr/sbin/nginx) in front of the server under test, for the reverse-proxy tests.

Each instance gets its own prefix directory (config, pid, logs, temp paths all inside it), one worker process,
free ports (a plain HTTP listener and, with ``tls_dir``, an HTTPS one so that ``$scheme`` is ``https``) and
runs in the foreground (``daemon off``); ``stop()`` sends SIGQUIT (graceful), then SIGTERM, then SIGKILL.

Locations (every unknown path of tests.apps.basic echoes the ASGI scope as JSON):

``/``                 X-Forwarded-For/-Proto/-Host/-Port, ``Host $host``
``/prefix/``          the same plus ``X-Forwarded-Prefix /prefix``; the prefix is stripped (``proxy_pass .../``)
``/upstream-host/``   like ``/`` but ``Host`` is the upstream name ``tricorn`` (so X-Forwarded-Host is observable)
``/rfc/``             RFC 7239 only: ``Forwarded: [client's Forwarded, ]for=..;proto=..;host=..``, X-Forwarded-*
                      removed, ``Host`` the upstream name, prefix stripped
``/unbuffered/``      like ``/`` with request and response buffering off (streams both ways), prefix stripped
``/ws/``              WebSockets: ``Upgrade $http_upgrade``, ``Connection $connection_upgrade`` ("upgrade" when the
                      client asked for one), X-Forwarded-For/-Proto, ``Host $host``, prefix stripped

``proxy_next_upstream off``: a failed upstream connection is a 502 for the client, never silently retried.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import HOST, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPSTREAM_NAME = "tricorn"


def nginx_available() -> bool:
    return os.access(NGINX, os.X_OK)


def _x_forwarded(host: str = "$host", prefix: str | None = None) -> list[str]:
    lines = [
        f"proxy_set_header Host {host};",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
        "proxy_set_header X-Forwarded-Port $server_port;",
    ]
    if prefix:
        lines.append(f"proxy_set_header X-Forwarded-Prefix {prefix};")
    return lines


def _websocket() -> list[str]:
    """The usual nginx WebSocket proxying: HTTP/1.1 upstream, hop-by-hop Upgrade/Connection passed on explicitly."""
    return [
        "proxy_set_header Host $host;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ]


def _rfc7239() -> list[str]:
    return [
        f"proxy_set_header Host {UPSTREAM_NAME};",
        'proxy_set_header Connection "";',
        'proxy_set_header Forwarded "${forwarded_chain}for=$remote_addr;proto=$scheme;host=$host";',
        # An empty value removes a header the client sent.
        'proxy_set_header X-Forwarded-For "";',
        'proxy_set_header X-Forwarded-Proto "";',
        'proxy_set_header X-Forwarded-Host "";',
        'proxy_set_header X-Forwarded-Port "";',
        'proxy_set_header X-Forwarded-Prefix "";',
    ]


def _location(path: str, target: str, headers: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    return [f"location {path} {{", f"    proxy_pass {target};", *("    " + h for h in [*headers, *extra]), "}"]


class Nginx:
    def __init__(
        self,
        prefix: Path,
        upstream: str,
        *,
        tls_dir: Path | None = None,
        upstream_keepalive_timeout: str | None = None,
    ):
        """``upstream``: ``127.0.0.1:PORT`` or ``unix:/path``."""
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.tls_port = free_port() if tls_dir else None
        self.tls_url = f"https://{HOST}:{self.tls_port}" if tls_dir else None
        self.conf_path = self.prefix / "nginx.conf"
        self.error_log_path = self.prefix / "error.log"
        self.conf_path.write_text(self._config(tls_dir, upstream_keepalive_timeout))
        self._out = open(self.prefix / "stdout.txt", "wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix) + "/", "-c", str(self.conf_path), "-e", str(self.error_log_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _config(self, tls_dir: Path | None, upstream_keepalive_timeout: str | None) -> str:
        p = self.prefix
        upstream_extra = [f"    keepalive_timeout {upstream_keepalive_timeout};"] if upstream_keepalive_timeout else []
        listen = [f"listen {HOST}:{self.port};"]
        if tls_dir:
            listen += [
                f"listen {HOST}:{self.tls_port} ssl;",
                f"ssl_certificate {tls_dir / 'server.pem'};",
                f"ssl_certificate_key {tls_dir / 'server.key'};",
            ]
        target = f"http://{UPSTREAM_NAME}"
        unbuffered = ("proxy_request_buffering off;", "proxy_buffering off;")
        locations = [
            *_location("/", target, _x_forwarded()),
            *_location("/prefix/", target + "/", _x_forwarded(prefix="/prefix")),
            *_location("/upstream-host/", target, _x_forwarded(host=UPSTREAM_NAME)),
            *_location("/rfc/", target + "/", _rfc7239()),
            *_location("/unbuffered/", target + "/", _x_forwarded(), unbuffered),
            *_location("/ws/", target + "/", _websocket()),
        ]
        lines = [
            # As root, nginx would switch its workers to "nobody", who cannot reach the temp dirs or the sockets.
            "user root;" if os.geteuid() == 0 else "",
            "worker_processes 1;",
            "daemon off;",
            "master_process on;",
            f"pid {p / 'nginx.pid'};",
            f"error_log {self.error_log_path} info;",
            "events { worker_connections 256; }",
            "http {",
            f"    access_log {p / 'access.log'};",
            f"    client_body_temp_path {p / 'client_body'};",
            f"    proxy_temp_path {p / 'proxy'};",
            f"    fastcgi_temp_path {p / 'fastcgi'};",
            f"    uwsgi_temp_path {p / 'uwsgi'};",
            f"    scgi_temp_path {p / 'scgi'};",
            "    default_type application/octet-stream;",
            "    client_max_body_size 64m;",
            "    proxy_http_version 1.1;",
            "    proxy_next_upstream off;",
            "    proxy_read_timeout 30s;",
            '    map $http_forwarded $forwarded_chain { "" ""; default "$http_forwarded, "; }',
            # "upgrade" for a WebSocket handshake, else empty (keeps upstream keep-alive for plain requests).
            '    map $http_upgrade $connection_upgrade { default upgrade; "" ""; }',
            f"    upstream {UPSTREAM_NAME} {{",
            f"        server {self.upstream};",
            "        keepalive 16;",
            *("    " + line for line in upstream_extra),
            "    }",
            "    server {",
            *("        " + line for line in listen),
            "        server_name _;",
            *("        " + line for line in locations),
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float = 15.0) -> None:
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + timeout
        while ports:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}\n{self.output}")
            try:
                with socket.create_connection((HOST, ports[0]), timeout=1):
                    ports.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx not ready after {timeout}s\n{self.output}")
            time.sleep(0.03)

    @property
    def error_log(self) -> str:
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def output(self) -> str:
        stdout = (self.prefix / "stdout.txt").read_text(errors="replace")
        return f"config:\n{self.conf_path.read_text()}\nstdout:\n{stdout}\nerror.log:\n{self.error_log}"

    def stop(self) -> None:
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
        self._out.close()
