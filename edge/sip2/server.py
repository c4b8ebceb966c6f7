"""The SIP2 server: a TCP (or TLS) listener and one thread per kiosk connection.

The threads are thin: read bytes, let the ``Framer`` cut messages, hand each
to the connection's ``Session``, write its answer. A connection ends when
the kiosk closes it, sends more than a message's worth without a CR, stops
half-way through a message, stays silent too long, or logs in again from
another connection (one session per kiosk: the newer wins, as after a
kiosk's reboot the older socket is usually dead already).
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge.sip2.codec import TERMINATOR, Framer, Overlong, fields_of
from edge.sip2.session import Node, Session
from edge.store import EdgeStore, db

logger = logging.getLogger(__name__)
# Every message on the wire, passwords masked: "<<<" from a kiosk, ">>>" to it.
trace = logging.getLogger("edge.sip2.trace")

# A kiosk silent this long is dropped (it reconnects and logs in again). Self-checks
# send 99 SC Status every minute or so; 30 minutes of silence is a kiosk that is gone.
IDLE_TIMEOUT = 1800.0
# Part of a message and nothing more for this long: the client stopped mid-message.
PARTIAL_TIMEOUT = 30.0
# A connection that has not logged in by then is dropped: a kiosk logs in at once, and
# 64 silent sockets must not keep the real kiosks out for half an hour.
LOGIN_TIMEOUT = 30.0
# A TLS handshake that has not finished in this long is abandoned.
HANDSHAKE_TIMEOUT = 10.0
# A branch has a handful of kiosks and sorters; more connections than this is a
# scan or a runaway client, and each would cost a thread.
MAX_CONNECTIONS = 64
RECV_SIZE = 4096
ACCEPT_POLL = 0.5  # how often the accept loop looks at the stop flag


def tls_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) from a PEM certificate and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class Sip2Server:
    """Serves SIP2 to the branch's self-checks and sorters on one TCP port."""

    def __init__(self, store: EdgeStore, *, host: str = "127.0.0.1", port: int = 6001,
                 link_up: Callable[[], bool] | None = None,
                 notify: Callable[[], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None, default_charset: str = "utf-8",
                 idle_timeout: float | None = None,
                 partial_timeout: float | None = None,
                 login_timeout: float | None = None,
                 status_before_login: bool = False) -> None:
        self.node = Node(store, link_up or (lambda: False), notify or (lambda: None),
                         default_charset, self._on_login, status_before_login)
        self.host, self._port = host, port
        self.ssl_context = ssl_context
        self.idle_timeout = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.partial_timeout = PARTIAL_TIMEOUT if partial_timeout is None else partial_timeout
        self.login_timeout = LOGIN_TIMEOUT if login_timeout is None else login_timeout
        self.stats: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[Session, socket.socket] = {}
        self._kiosks: dict[str, Session] = {}
        self._threads: set[threading.Thread] = set()
        self._accept_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when started with port 0)."""
        return int(self._sock.getsockname()[1]) if self._sock else self._port

    def start(self) -> None:
        """Listen and accept kiosks in a thread of its own."""
        self._sock = socket.create_server((self.host, self._port), backlog=16)
        self._sock.settimeout(ACCEPT_POLL)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="sip2-accept",
                                               daemon=True)
        self._accept_thread.start()
        logger.info("SIP2 %son %s:%d", "(TLS) " if self.ssl_context else "", self.host,
                    self.port)

    def stop(self) -> None:
        """Stop accepting, close every kiosk's connection, wait for the threads."""
        self._stop.set()
        if self._accept_thread:
            self._accept_thread.join(timeout=5)
        if self._sock:
            self._sock.close()
        with self._lock:
            conns = list(self._conns.values())
            threads = list(self._threads)
        for conn in conns:
            _hang_up(conn)
        for t in threads:
            t.join(timeout=5)

    def state(self) -> dict[str, Any]:
        """Who is connected and what was counted, for a status page."""
        with self._lock:
            kiosks = sorted(self._kiosks)
            connections = len(self._conns)
        return {"port": self.port, "tls": self.ssl_context is not None, "kiosks": kiosks,
                "connections": connections, **self.stats}

    # -- threads --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    logger.warning("SIP2 accept failed: %s", exc)
                continue
            with self._lock:
                full = len(self._threads) >= MAX_CONNECTIONS
            if full:
                logger.warning("SIP2: %d connections already: refusing %s", MAX_CONNECTIONS,
                               addr[0])
                self.stats["refused_connections"] += 1
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn, f"{addr[0]}:{addr[1]}"),
                                 name=f"sip2-{addr[0]}:{addr[1]}", daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        session = Session(self.node, peer)
        self.stats["connections_total"] += 1
        try:
            if self.ssl_context is not None:
                conn.settimeout(HANDSHAKE_TIMEOUT)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            with self._lock:
                self._conns[session] = conn
            self._converse(conn, session)
        except Overlong as exc:
            logger.warning("sip2 %s: %s: closing", peer, exc)
            self.stats["overlong"] += 1
        except (OSError, ssl.SSLError) as exc:
            logger.info("sip2 %s: connection ended: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one kiosk's fault never stops the server
            logger.exception("sip2 %s: unexpected error: closing", peer)
        finally:
            with self._lock:
                self._conns.pop(session, None)
                if session.account and self._kiosks.get(session.account.name) is session:
                    del self._kiosks[session.account.name]
                self._threads.discard(threading.current_thread())
            _hang_up(conn)
            conn.close()
            if not db.is_closed():
                db.close()   # this thread's SQLite connection

    def _converse(self, conn: socket.socket, session: Session) -> None:
        framer = Framer()
        while not self._stop.is_set() and not session.closing:
            partial = framer.partial
            conn.settimeout(self.partial_timeout if partial else self.idle_timeout
                            if session.account else self.login_timeout)
            try:
                data = conn.recv(RECV_SIZE)
            except TimeoutError:
                logger.warning("sip2 %s: %s: closing", session.peer,
                               "stopped in the middle of a message" if partial else "idle"
                               if session.account else "no login")
                self.stats["timeouts"] += 1
                return
            if not data:
                return
            framer.feed(data)
            while not session.closing and (raw := framer.next_message()) is not None:
                trace.debug("%s <<< %s", session.peer, fields_of(raw, session.charset))
                self.stats["messages"] += 1
                answer = session.handle(raw)
                if answer is None:
                    self.stats["unanswered"] += 1
                    continue
                trace.debug("%s >>> %s", session.peer, fields_of(answer, session.charset))
                conn.sendall(answer + TERMINATOR)

    def _on_login(self, session: Session) -> None:
        """One session per kiosk: a new login closes the kiosk's older connection."""
        assert session.account is not None
        with self._lock:
            for name in [n for n, s in self._kiosks.items() if s is session]:
                del self._kiosks[name]    # the same connection logged in as another kiosk
            old = self._kiosks.get(session.account.name)
            self._kiosks[session.account.name] = session
            conn = self._conns.get(old) if old is not None and old is not session else None
        if conn is not None:
            logger.warning("sip2: kiosk %s logged in again from %s: closing %s",
                           session.account.name, session.peer, old.peer if old else "?")
            _hang_up(conn)


def _hang_up(conn: socket.socket) -> None:
    """Wake a thread blocked on ``conn`` by shutting the socket down (closing is its job)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
