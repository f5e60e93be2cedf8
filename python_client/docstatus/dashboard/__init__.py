"""``docstatus dashboard``: a live web dashboard for operators (the ``dashboard`` extra).

Server-rendered pages (Starlette, Jinja2 with autoescape), charts as inline SVG drawn on the
server, a few lines of JavaScript that replace a page's content when a server-sent event says
something moved. Every read goes through ``docstatus.Client``; every action calls the SQL API.

- ``app.create_app(settings)``: the ASGI application;
- ``live.EventHub``: one ``Subscriber`` per process, fanned out to every browser;
- ``security``: the action token, sessions, CSRF and Origin checks, the CSP header;
- ``charts``: the SVG charts and the state diagram;
- ``command.dashboard``: the click command.
"""

from docstatus.dashboard.settings import TOKEN_ENV, DashboardSettings

__all__ = ["TOKEN_ENV", "DashboardSettings"]
