"""``raftka console``: a web console for a Raftka cluster, reached over gRPC through this
client (the nodes know nothing of it).

Flask renders the pages, waitress serves them: both are pure Python and thread-based like
the client (whose calls block), so a request is one thread and one blocking Admin call, with
no event loop to bridge. Charts are drawn by Chart.js, served from ``static/`` with its
license (no CDN: it works offline). Samples for the charts (throughput from high-watermark
deltas, group lag) are kept in memory by :class:`~raftka.client.console._sampler.Sampler`.

    raftka console --bootstrap 127.0.0.1:7001 --listen 127.0.0.1:8080

See ``_app.py`` for the pages and how errors are answered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from raftka.client.console._app import close_app, create_app, error_status
from raftka.client.console._sampler import Sampler

__all__ = ["Sampler", "close_app", "create_app", "error_status", "parse_listen", "serve"]

THREADS = 8  # concurrent requests; each may wait on the cluster for up to a call's timeout


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError when malformed."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port_text)


def serve(bootstrap: str | list[str], listen: str = "127.0.0.1:8080", *,
          sample_interval_s: float = 2.0,
          on_ready: Callable[[str], None] | None = None, security: Any = None,
          login: bool = False) -> None:
    """Serve the console until interrupted (KeyboardInterrupt propagates). ``on_ready`` gets
    the URL once the socket listens (``listen`` may name port 0). Raises OSError when the
    address cannot be bound."""
    import waitress  # noqa: PLC0415 - only the console needs it

    host, port = parse_listen(listen)
    logging.getLogger("waitress").setLevel(logging.WARNING)
    app = create_app(bootstrap, sample_interval_s=sample_interval_s, security=security,
                     login=login)
    try:
        server = waitress.create_server(app, host=host, port=port, threads=THREADS,
                                        ident="raftka-console")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.effective_port}/"
        (on_ready or (lambda u: print(f"raftka console: {u}", file=sys.stderr, flush=True)))(url)
        try:
            server.run()
        finally:
            server.close()
    finally:
        close_app(app)
