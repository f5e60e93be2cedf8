"""The dashboard's ASGI application: pages, the event stream, the actions.

Reads run in the server's worker threads through a ``Client`` over a small connection pool.
With actions off, the pool's connections are read-only (``default_transaction_read_only``):
even a bug here could not write. Every page can also be fetched as its content alone
(``?partial=1``): the browser's script swaps that in when an event says something moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import psycopg_pool
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from docstatus.client import Client
from docstatus.dashboard import views
from docstatus.dashboard.live import CLOSED, EventHub, sse_message
from docstatus.dashboard.security import SESSION_COOKIE, Forbidden, SecurityHeaders, Sessions, same_origin
from docstatus.dashboard.settings import DashboardSettings
from docstatus.errors import CursorTooOld, DocStatusError
from docstatus.models import Cursor

log = logging.getLogger("docstatus.dashboard")

CATCH_UP_BATCH = 500
# Pages every browser refreshes on every burst of events (the overview, the state machine) are
# read at most once per this many seconds, whatever the number of browsers.
SHARED_PAGE_TTL = 1.0
# The functions each mode needs, to warn at start when the role cannot call them.
ACTION_FUNCTIONS = ["docstatus.retry_document(bigint, text)", "docstatus.retry_failed_documents(text)",
                    "docstatus.reap_expired_jobs()",
                    "docstatus.validate_document(bigint, boolean, text, text, bigint)"]
READ_FUNCTIONS = ["docstatus.list_documents(text, text, text, text, timestamptz, timestamptz, timestamptz, "
                  "timestamptz, bigint, integer)", "docstatus.documents_per_minute(interval)",
                  "docstatus.events_after(xid8, bigint, integer)"]


def _templates() -> Environment:
    folder = resources.files("docstatus.dashboard") / "templates"
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["duration"] = _duration
    env.filters["when"] = lambda value: "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
    return env


def _duration(value: Any) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


class Dashboard:
    """The state one process shares between requests: pool, client, hub, sessions."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        kwargs: dict[str, Any] = {"autocommit": True}
        if not settings.actions:
            kwargs["options"] = "-c default_transaction_read_only=on"
        self.pool = psycopg_pool.ConnectionPool(settings.dsn, min_size=1, max_size=4, kwargs=kwargs, open=False)
        self.client = Client(self.pool)
        self.hub = EventHub(settings.dsn, poll_interval=settings.poll_interval)
        self.sessions = Sessions(settings.action_token if settings.actions else None)
        self.templates = _templates()
        self.fields_reader, self.blob_note = _blob_access(settings.blob_connection_string)
        self._shared: dict[str, tuple[float, Cursor | None, Any]] = {}
        self._shared_locks: dict[str, asyncio.Lock] = {}

    def render(self, request: Request, template: str, status_code: int = 200, *, since: Cursor | None = None,
               **context: Any) -> HTMLResponse:
        """``since``: the hub's cursor taken before the page's reads, where its live updates start."""
        session_id = request.cookies.get(SESSION_COOKIE)
        signed_in = self.sessions.valid(session_id)
        page = self.templates.get_template(template).render(
            request=request, partial=request.query_params.get("partial") == "1",
            actions=self.settings.actions, signed_in=signed_in,
            csrf=self.sessions.csrf_token(session_id) if signed_in else "",  # type: ignore[arg-type]
            cursor="" if since is None else str(since), **context)
        # The page's data includes every event up to here: the script fetches again when it has
        # seen a later one (a shared read may be up to SHARED_PAGE_TTL old).
        return HTMLResponse(page, status_code=status_code,
                            headers={"X-Docstatus-Cursor": "" if since is None else str(since)})

    async def read(self, function: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(function, self.client, *args)

    async def shared_read(self, function: Callable[[Client], Any]) -> tuple[Cursor | None, Any]:
        """``function``'s data and the hub cursor taken before it was read, read again only
        when older than SHARED_PAGE_TTL: a hundred browsers refreshing at once cost one read."""
        key = function.__name__
        lock = self._shared_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._shared.get(key)
            now = asyncio.get_running_loop().time()
            if cached is None or now - cached[0] > SHARED_PAGE_TTL:
                since = self.hub.cursor
                cached = (now, since, await self.read(function))
                self._shared[key] = cached
            return cached[1], cached[2]


def _blob_access(connection_string: str | None):
    """A reader of result blobs when the dms extra is installed and a store is named, else
    None and why not."""
    try:
        import json
        import os

        from docstatus.dms.blob_store import BlobTimeouts, service_client
        from docstatus.dms.config import CONNECTION_STRING_ENV
    except ImportError:
        return None, "extracted fields need the dms extra: pip install 'docstatus[dms]'"
    # Only a store somebody named: a guessed one (Azurite's default) would make every page of a
    # finished document wait for a connection that cannot succeed.
    connection_string = connection_string or os.environ.get(CONNECTION_STRING_ENV)
    if not connection_string:
        return None, f"start the dashboard with --blob-connection-string (or {CONNECTION_STRING_ENV}) to see the fields"
    # No retry: a store that does not answer costs a page one short wait, not several.
    service = service_client(connection_string, BlobTimeouts(connect=5, read=5), retry_total=0)

    def read_fields(container: str, name: str) -> dict:
        stored = json.loads(service.get_blob_client(container, name).download_blob(encoding="utf-8").readall())
        return stored.get("fields", stored) if isinstance(stored, dict) else {"value": stored}

    return read_fields, None


def create_app(settings: DashboardSettings) -> Starlette:
    dashboard = Dashboard(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(dashboard.pool.open, True, 30)
        rights = await dashboard.read(Client.may_execute, READ_FUNCTIONS + ACTION_FUNCTIONS)
        if not all(rights[f] for f in READ_FUNCTIONS):
            log.warning("the dashboard's role cannot read everything: connect as a member of docstatus_reader")
        if settings.actions and not all(rights[f] for f in ACTION_FUNCTIONS):
            log.warning("actions are on but the role cannot run them all: connect as a member of docstatus_operator")
        dashboard.hub.start(asyncio.get_running_loop())
        await run_in_threadpool(dashboard.hub.wait_caught_up, 30)
        try:
            yield
        finally:
            dashboard.hub.stop()
            await run_in_threadpool(dashboard.pool.close)

    async def overview(request: Request) -> Response:
        since, data = await dashboard.shared_read(views.overview)
        return dashboard.render(request, "overview.html", since=since, **data)

    async def document_list(request: Request) -> Response:
        since = dashboard.hub.cursor
        try:
            filters = views.ListFilters.parse(dict(request.query_params))
            after = request.query_params.get("after")
            after_id = int(after) if after else None
            data = await dashboard.read(views.documents, filters, after_id, settings.page_size)
        except ValueError as exc:
            return dashboard.render(request, "error.html", 400, title="Bad filter", message=str(exc))
        except DocStatusError as exc:
            return dashboard.render(request, "error.html", 400, title="Bad filter", message=str(exc),
                                    sqlstate=exc.sqlstate)
        next_link = None
        if data["next_after"] is not None:
            next_link = "/documents?" + urlencode({**filters.query(), "after": data["next_after"]})
        return dashboard.render(request, "documents.html", since=since, filters=filters, next_link=next_link,
                                first_link="/documents?" + urlencode(filters.query()), **data)

    async def document_page(request: Request) -> Response:
        document_id = request.path_params["document_id"]
        since = dashboard.hub.cursor
        data = await dashboard.read(views.document, document_id, dashboard.fields_reader)
        if data is None:
            return dashboard.render(request, "error.html", 404, title="No such document",
                                    message=f"There is no document {document_id}.")
        return dashboard.render(request, "document.html", since=since, blob_note=dashboard.blob_note, **data)

    async def state_machine(request: Request) -> Response:
        since, data = await dashboard.shared_read(views.state_machine)
        return dashboard.render(request, "states.html", since=since, **data)

    async def events(request: Request) -> Response:
        given = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            cursor = Cursor.parse(given) if given else None
        except ValueError:
            return PlainTextResponse(f"not an event id: {given!r}", status_code=400)
        return StreamingResponse(_stream(dashboard, request, cursor), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- actions ------------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        if not settings.actions:
            return dashboard.render(request, "error.html", 403, title="Actions are off",
                                    message="This dashboard was started without --allow-actions.")
        return dashboard.render(request, "login.html", failed=False)

    async def login(request: Request) -> Response:
        if not settings.actions:
            return PlainTextResponse("actions are off", status_code=403)
        form = await request.form()
        if not same_origin(request):
            return PlainTextResponse("cross-origin request refused", status_code=403)
        session_id = dashboard.sessions.sign_in(str(form.get("token", "")))
        if session_id is None:
            return dashboard.render(request, "login.html", 403, failed=True)
        response = RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def action(run: Callable[[Dashboard, Any], Any], describe: Callable[[Any], str]):
        async def endpoint(request: Request) -> Response:
            if not settings.actions:
                return PlainTextResponse("actions are off", status_code=403)
            form = await request.form()
            try:
                dashboard.sessions.check_action(request, form.get("csrf"))  # type: ignore[arg-type]
            except Forbidden as exc:
                return PlainTextResponse(str(exc), status_code=403)
            back = _local(str(form.get("back", "/")))
            try:
                result = await run_in_threadpool(run, dashboard, form)
            except DocStatusError as exc:
                return dashboard.render(request, "action.html", 409, ok=False, message=str(exc),
                                        sqlstate=exc.sqlstate, hint=exc.hint, back=back)
            except ValueError as exc:
                return dashboard.render(request, "action.html", 400, ok=False, message=str(exc), sqlstate=None,
                                        back=back)
            return dashboard.render(request, "action.html", ok=True, message=describe(result), sqlstate=None,
                                    back=back)
        return endpoint

    routes = [
        Route("/", overview),
        Route("/documents", document_list),
        Route("/documents/{document_id:int}", document_page),
        Route("/states", state_machine),
        Route("/events", events),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/actions/retry", action(_retry, lambda job: f"Document {job.document_id} queued again: job "
                                       f"{job.id}, attempt {job.attempt}."), methods=["POST"]),
        Route("/actions/retry-pattern", action(_retry_pattern, lambda jobs: f"{len(jobs)} document(s) queued "
                                               "again."), methods=["POST"]),
        Route("/actions/validate", action(_validate, lambda doc: f"Document {doc.id} validated again: now "
                                          f"{doc.text_extraction_status}" + (f" ({doc.status_reason})"
                                          if doc.status_reason else "") + "."), methods=["POST"]),
        Route("/actions/reap", action(_reap, lambda jobs: f"{len(jobs)} expired lease(s) reaped."),
              methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(resources.files("docstatus.dashboard") / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.dashboard = dashboard
    return app


def _local(path: str) -> str:
    """A redirect target on this server only (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _document_id(form: Any) -> int:
    try:
        return int(str(form.get("document_id", "")))
    except ValueError:
        raise ValueError("document_id must be a number") from None


def _retry(dashboard: Dashboard, form: Any):
    return dashboard.client.retry_document(_document_id(form))


def _retry_pattern(dashboard: Dashboard, form: Any):
    return dashboard.client.retry_failed_documents(str(form.get("error_pattern", "")))


def _reap(dashboard: Dashboard, form: Any):
    return dashboard.client.reap_expired_jobs()


def _validate(dashboard: Dashboard, form: Any):
    """Validate again: the DMS reads the blob and validate_document decides (needs the dms extra)."""
    document_id = _document_id(form)
    try:
        from docstatus.dms.store import DocumentStore
    except ImportError:
        raise ValueError("validate again needs the dms extra: pip install 'docstatus[dms]'") from None
    with DocumentStore(dashboard.pool, dashboard.settings.blob_connection_string, retry_total=1,
                       timeout=10) as store:
        return store.validate(document_id)


async def _stream(dashboard: Dashboard, request: Request, cursor: Cursor | None) -> AsyncIterator[str]:
    """The event stream of one browser: what it missed since ``cursor``, then the hub's events."""
    queue = dashboard.hub.subscribe()  # first: nothing committed from now on can be missed
    try:
        yield "retry: 1000\n\n"
        last = cursor
        if cursor is not None:
            after: Cursor = cursor
            while True:
                try:
                    batch = await dashboard.read(Client.events_after, after.tx_id, after.event_id, CATCH_UP_BATCH)
                except CursorTooOld:
                    yield "event: reset\ndata: {}\n\n"  # history retention dropped it: reload
                    return
                for event in batch:
                    yield sse_message(event)
                    last = after = event.cursor
                if len(batch) < CATCH_UP_BATCH:
                    break
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), dashboard.settings.keepalive)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keepalive\n\n"
                continue
            if item is CLOSED:
                return
            if last is not None and tuple(item.cursor) <= tuple(last):
                continue  # already sent by the catch-up read
            yield sse_message(item)
            last = item.cursor
    finally:
        dashboard.hub.unsubscribe(queue)
