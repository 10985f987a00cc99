"""The live view's HTTP server (aiohttp): one page, its static files, server-sent events,
and three safe actions.

    GET  /                         the page (fleet, one kit, rollouts; routed in the page)
    GET  /static/...               its JS and CSS (shipped in this package: no CDN)
    GET  /events[?thing=NAME]      server-sent events: a snapshot, then what changes
    POST /api/things/NAME/desired  {"desired": {...}}: write the classic shadow's desired
    POST /api/jobs/ID/cancel       {"force": false}: cancel a job
    POST /api/things/NAME/revoke   {"reason": "..."}: revoke the thing's certificate

Security: the server binds to 127.0.0.1 unless told otherwise, and any other address
needs a token (:func:`check_bind`). With a token every request must carry it (a
``?token=`` link sets a SameSite=Strict cookie, or ``Authorization: Bearer``). On a
loopback bind, requests naming another host are refused (DNS rebinding). Actions need
the per-server CSRF token the page carries in a header, a JSON body, and an ``Origin``
(when the browser sends one) equal to the server's own; ``--read-only`` refuses them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import ipaddress
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from host_tools.bench.bench import Bench
from host_tools.errors import UserError
from host_tools.view.model import CONSOLE_LINES, Change, Thing
from host_tools.view.remote import RemoteSource, RemoteSpec
from host_tools.view.source import BenchSource, read_lines

log = logging.getLogger("thingkit")
STATIC = Path(__file__).with_name("static")
FLUSH_S = 0.15  # changes arriving this close together go out in one event
KEEPALIVE_S = 15.0
CONSOLE_BACKLOG = 32 * 1024
THING_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
JOB_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CSRF_HEADER = "X-Thingkit-CSRF"
COOKIE = "thingkit_view"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
SETTINGS = ("telemetry_interval_s", "diag_interval_s", "log_level", "components")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (one line, no traceback)."""
    if not is_loopback(host) and not token:
        raise UserError(
            f"refusing to serve the view on {host} without --token",
            "anyone who reaches that address could watch and act on the bench: add "
            "--token SECRET, or bind to 127.0.0.1 (the default)",
        )


@dataclass(eq=False)
class Watcher:
    """One browser's event stream: what changed since its last event."""

    thing: str | None
    rows: set[str] = field(default_factory=set)
    kit: list[tuple[str, Any]] = field(default_factory=list)
    rollouts: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class ViewServer:
    """The live view of one bench."""

    def __init__(
        self,
        bench: Bench | None,
        kits_dirs: list[Path],
        host: str = "127.0.0.1",
        port: int = 8780,
        token: str | None = None,
        read_only: bool = False,
        remote: RemoteSpec | None = None,
    ) -> None:
        """The view of ``bench``, or with ``remote`` (and no bench) of a remote cloud
        read over MQTT only (:class:`~host_tools.view.remote.RemoteSource`)."""
        check_bind(host, token)
        self.bench, self.host, self.port = bench, host, port
        self.token, self.read_only = token, read_only
        self.csrf = secrets.token_urlsafe(24)
        self.watchers: set[Watcher] = set()
        self.source: BenchSource | RemoteSource
        if remote is not None:
            self.source = RemoteSource(remote, self._on_change, self._on_rollouts)
        else:
            assert bench is not None
            self.source = BenchSource(bench, kits_dirs, self._on_change, self._on_rollouts)
        self.runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task] = set()

    # -- life ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/events", self._events)
        app.router.add_post("/api/things/{thing}/desired", self._act_desired)
        app.router.add_post("/api/jobs/{job}/cancel", self._act_cancel)
        app.router.add_post("/api/things/{thing}/revoke", self._act_revoke)
        app.router.add_static("/static/", STATIC)
        return app

    async def start(self) -> int:
        """Connect to the bench and listen; return the port (useful with port 0)."""
        await self.source.start()
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for task in list(self._streams):  # open event streams never end by themselves
            task.cancel()
        await self.source.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, with_token: bool = False) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        q = f"?token={self.token}" if with_token and self.token else ""
        return f"http://{host}:{self.port}/{q}"

    # -- changes -> watchers ------------------------------------------------------------
    def _on_change(self, ch: Change) -> None:
        for w in self.watchers:
            if "row" in ch.kinds:
                w.rows.add(ch.thing)
            if w.thing == ch.thing:
                for kind in ch.kinds - {"row"}:
                    w.kit.append((kind, ch.data))
            w.wake.set()

    def _on_rollouts(self) -> None:
        for w in self.watchers:
            w.rollouts = True
            w.wake.set()

    # -- security -------------------------------------------------------------------
    def _token_ok(self, request: web.Request) -> bool:
        if not self.token:
            return True
        auth = request.headers.get("Authorization", "")
        given = [
            auth[7:] if auth.startswith("Bearer ") else "",
            request.cookies.get(COOKIE, ""),
            request.query.get("token", ""),
        ]
        return any(g and hmac.compare_digest(g, self.token) for g in given)

    def _host_ok(self, request: web.Request) -> bool:
        if not is_loopback(self.host):
            return True  # the token guards it; the names it is reached by are not known
        host = request.host or ""
        if host.startswith("["):
            name = host[1:].split("]", 1)[0]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(name)

    def _csrf_problem(self, request: web.Request) -> str | None:
        if self.read_only:
            return "the view is read-only (--read-only)"
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), self.csrf):
            return "missing or wrong CSRF token"
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return f"cross-origin request from {origin}"
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site request"
        if request.content_type != "application/json":
            return "actions take a JSON body"
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._host_ok(request):
            return web.Response(status=421, text="this server answers to 127.0.0.1 only\n")
        if not self._token_ok(request):
            return web.Response(
                status=401, text="token required: open the URL `thingkit view` printed\n"
            )
        if request.method == "POST":
            problem = self._csrf_problem(request)
            if problem:
                return web.json_response({"ok": False, "error": problem}, status=403)
        resp = await handler(request)
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if self.token and request.query.get("token") and request.method == "GET":
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return resp

    # -- pages -----------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        text = (STATIC / "index.html").read_text()
        text = text.replace("{{csrf}}", html.escape(self.csrf))
        text = text.replace("{{readonly}}", "1" if self.read_only else "0")
        text = text.replace("{{bench}}", html.escape(self.source.describe()))
        return web.Response(text=text, content_type="text/html")

    def _snapshot(self, thing: str | None) -> dict[str, Any]:
        m = self.source.model
        snap: dict[str, Any] = {
            "t": time.time(),
            "rows": [t.row() for t in m.things.values()],
            "rollouts": m.rollouts(),
            "readonly": self.read_only,
            "unavailable": self.source.unavailable,  # what this source cannot know, and why
        }
        if thing is not None:
            th = m.things.get(thing) or Thing(thing)  # a page never adds a thing
            snap["kit"] = {
                "name": thing,
                "row": th.row(),
                "shadows": th.shadow_view(),
                "telemetry": th.telemetry_view(),
                "vitals": th.vitals,
                "jobs": th.jobs,
                "cert": self.source.certificate(thing),
                "console": self.source.kit_dir(thing) is not None,
            }
        return snap

    async def _events(self, request: web.Request) -> web.StreamResponse:
        thing = request.query.get("thing") or None
        if thing is not None and not THING_RE.fullmatch(thing):
            raise web.HTTPBadRequest(text="bad thing name")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        w = Watcher(thing)
        self.watchers.add(w)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        tail = None
        if thing is not None:
            self.source.watch(thing)
        try:
            await _send(resp, "snapshot", self._snapshot(thing))
            if thing is not None:
                tail = asyncio.create_task(self._tail_console(w))
            await self._stream(resp, w)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.discard(w)
            self._streams.discard(task)  # type: ignore[arg-type]
            if tail is not None:
                tail.cancel()
            if thing is not None:
                self.source.unwatch(thing)
        return resp

    async def _stream(self, resp: web.StreamResponse, w: Watcher) -> None:
        m = self.source.model
        while True:
            try:
                await asyncio.wait_for(w.wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await asyncio.sleep(FLUSH_S)
            w.wake.clear()
            rows, w.rows = w.rows, set()
            kit, w.kit = w.kit, []
            if rows:
                await _send(
                    resp, "rows", {"t": time.time(), "rows": [m.things[n].row() for n in rows]}
                )
            if w.rollouts:
                w.rollouts = False
                await _send(resp, "rollouts", m.rollouts())
            if kit and w.thing is not None:
                await self._send_kit(resp, w.thing, kit)

    async def _send_kit(self, resp: web.StreamResponse, thing: str, kit: list) -> None:
        th = self.source.model.things.get(thing) or Thing(thing)
        kinds = {k for k, _ in kit}
        points = [d for k, d in kit if k == "telemetry"]
        lines = [ln for k, d in kit if k == "console" for ln in d]
        if points:
            await _send(resp, "telemetry", points)
        if "shadow" in kinds:
            await _send(resp, "shadows", th.shadow_view())
        if "vitals" in kinds:
            await _send(resp, "vitals", th.vitals)
        if "jobs" in kinds:
            await _send(resp, "jobs", th.jobs)
        if "cert" in kinds:
            await _send(resp, "cert", self.source.certificate(thing))
        if lines:
            await _send(resp, "console", lines[-CONSOLE_LINES:])

    async def _tail_console(self, w: Watcher) -> None:
        """Send the virtual kit's console as it grows (the file is read on the server)."""
        assert w.thing is not None
        d = self.source.kit_dir(w.thing)
        if d is None:
            return
        path = d / "console.log"
        pos = max(0, _size(path) - CONSOLE_BACKLOG)
        first = True
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                pos, lines = read_lines(path, pos, skip_partial=first and pos > 0)
                first = False
                if lines:
                    w.kit.append(("console", lines[-CONSOLE_LINES:]))
                    w.wake.set()
                await asyncio.sleep(0.2)

    # -- actions ---------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="a JSON object is expected")
        return body

    async def _run(self, func: Any, *args: Any) -> web.Response:
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, func, *args)
        except UserError as e:
            return web.json_response({"ok": False, "error": e.line()}, status=409)
        except Exception as e:
            log.exception("view action failed")
            return web.json_response({"ok": False, "error": str(e)}, status=500)
        return web.json_response({"ok": True, "result": result})

    async def _act_desired(self, request: web.Request) -> web.Response:
        thing = request.match_info["thing"]
        if not THING_RE.fullmatch(thing):
            raise web.HTTPBadRequest(text="bad thing name")
        desired = (await self._body(request)).get("desired")
        if not isinstance(desired, dict) or not desired:
            raise web.HTTPBadRequest(text='expected {"desired": {...}}')
        log.info("view: desired of %s <- %s", thing, json.dumps(desired))
        resp = await self._run(self.source.set_desired, thing, desired)
        return resp

    async def _act_cancel(self, request: web.Request) -> web.Response:
        job = request.match_info["job"]
        if not JOB_RE.fullmatch(job):
            raise web.HTTPBadRequest(text="bad job id")
        force = bool((await self._body(request)).get("force", False))
        log.info("view: cancel job %s (force=%s)", job, force)
        resp = await self._run(self.source.cancel_job, job, force)
        self.source.schedule_jobs()
        return resp

    async def _act_revoke(self, request: web.Request) -> web.Response:
        thing = request.match_info["thing"]
        if not THING_RE.fullmatch(thing):
            raise web.HTTPBadRequest(text="bad thing name")
        reason = str((await self._body(request)).get("reason") or "unspecified")
        log.info("view: revoke the certificate of %s (%s)", thing, reason)
        resp = await self._run(self.source.revoke, thing, reason)
        self.source.certificate(thing)  # the revoked flag of its row
        self._on_change(Change(thing, {"row", "cert"}))
        return resp


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    body = json.dumps(data, separators=(",", ":"))
    await resp.write(f"event: {event}\ndata: {body}\n\n".encode())


def serve(server: ViewServer, on_ready: Any = None) -> None:
    """Run ``server`` until interrupted (Ctrl-C or SIGTERM)."""
    import signal

    async def main() -> None:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
