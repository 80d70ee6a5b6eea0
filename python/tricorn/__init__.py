"""tricorn: an ASGI server with a Rust network layer, a drop-in for uvicorn."""

from tricorn.config import Config
from tricorn.embed import serve
from tricorn.main import main, run
from tricorn.server import Server

try:
    from tricorn._tricorn import __version__
except ImportError:
    __version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__", "main", "run", "serve"]
