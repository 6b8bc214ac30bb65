"""The HTTP server's own settings: uvicorn options from a :class:`~pluralign.serve.protocol.ServeConfig`
(keep-alive, graceful-shutdown and header-size limits, and a header timeout uvicorn lacks), and which
host names count as loopback.

    uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options(cfg))
"""

from __future__ import annotations

import ipaddress

from pluralign.serve.protocol import ServeConfig

LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str | None) -> bool:
    """True for ``localhost``, ``127.x.x.x``, ``::1`` (bracketed or not)."""
    if not host:
        return False
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header or of an origin's authority, without the port."""
    h = header.strip()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def header_timeout_protocol(timeout: float):
    """uvicorn's h11 protocol, closing a connection that has not delivered a complete request head
    within ``timeout`` seconds of connecting or of its previous response (uvicorn's own keep-alive
    timer stops at the first byte, so a client sending its headers a byte at a time would otherwise
    hold the connection forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head came in
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            self._arm_head_timer()  # before super(): a pipelined request is parsed there
            super().on_response_complete()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def uvicorn_options(cfg: ServeConfig) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: the header-timeout protocol,
    keep-alive, graceful-shutdown timeout and the largest request head."""
    return {
        "http": header_timeout_protocol(cfg.header_timeout_s),
        "timeout_keep_alive": cfg.keep_alive_s,
        "timeout_graceful_shutdown": cfg.shutdown_timeout_s,
        "h11_max_incomplete_event_size": cfg.max_header_bytes,
    }
