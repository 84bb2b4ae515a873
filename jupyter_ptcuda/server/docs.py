"""``GET {base_url}/jupyter-ptcuda/docs``: jupyter-ptcuda's documentation (its README), as a page.

JupyterLab's Help menu ("jupyter-ptcuda Help") and the GPU panel open it in a tab. It is served by the
server itself, so it matches the installed version and needs no internet (GPU clusters often have none).
The text is the package's own README (its metadata), rendered with mistune (a dependency of nbconvert,
which jupyter_server requires); without mistune it is shown as plain text.
"""

from __future__ import annotations

import asyncio
import functools
import html
import importlib.metadata

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .base import NAMESPACE

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><base target="_blank"><title>jupyter-ptcuda {version}</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; }}
pre, code {{ font-family: ui-monospace, monospace; background: #f4f4f4; }}
pre {{ padding: .6em; overflow-x: auto; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ddd; padding: .2em .5em; vertical-align: top; }}
</style></head><body>
<p><small>jupyter-ptcuda {version}: the documentation of the version installed on this server.</small></p>
{body}
</body></html>"""


@functools.lru_cache(maxsize=1)
def docs_html() -> str:
    """The README of the installed package as an HTML page (cached: it does not change while we run)."""
    try:
        meta = importlib.metadata.metadata("jupyter-ptcuda")
        text = meta.get_payload() or meta["Description"] or ""  # type: ignore[attr-defined]
        version = meta["Version"] or ""
    except importlib.metadata.PackageNotFoundError:
        text, version = "", ""
    if not text:
        text = "No documentation was installed with this package: see README.md in its source."
    try:
        import mistune

        body = str(mistune.html(text))
    except ImportError:
        body = f"<pre>{html.escape(text)}</pre>"
    return PAGE.format(version=html.escape(version), body=body)


class DocsHandler(ExtensionHandlerMixin, JupyterHandler):
    auth_resource = "jupyter_ptcuda"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        page = await asyncio.to_thread(docs_html)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)


handlers = [(rf"/{NAMESPACE}/docs", DocsHandler)]
