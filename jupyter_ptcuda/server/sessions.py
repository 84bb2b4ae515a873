"""``POST {base_url}/api/sessions`` (opening a notebook starts its kernel) with our refusals kept as refusals.

jupyter_server's session handler turns any exception of a kernel start into ``500`` — logged as a server
error, at ``[E]``, with the request's headers dumped — and JupyterLab then shows "HTTP 409: Conflict (…)".
When the start was refused by jupyter-ptcuda for a reason the user can act on (no GPU free: 409, beyond a
policy: 403, a bad kernelspec option: 400), this handler answers with that status and message instead, and
the server logs one ``[W]`` line (a 4xx is the client's, not a server error). Everything else is
jupyter_server's handler unchanged. Registered by the server extension on the same route: an extension's
routes are matched before the server's own.

jupyter_client's kernel manager logs the failed start itself too, at ``[E]`` with a traceback;
:class:`RefusalLogFilter` (on the server's logger) turns that record, for a refusal of ours, into one
``[W]`` line with the reason.
"""

from __future__ import annotations

import logging

from jupyter_server.services.sessions.handlers import SessionRootHandler
from tornado import web

from ..errors import PtcudaError, http_status


def refused(exc: BaseException) -> PtcudaError | None:
    """Our 4xx refusal behind jupyter_server's 500 (its ``__cause__``), if that is what ``exc`` is."""
    cause = exc.__cause__
    if isinstance(exc, web.HTTPError) and exc.status_code == 500 and isinstance(cause, PtcudaError) \
            and http_status(cause) < 500:
        return cause
    return None


class RefusalLogFilter(logging.Filter):
    """An error record whose exception is our 4xx refusal becomes a one-line warning (no traceback); the
    same refusal logged again (jupyter_client's kernel manager, then its multi-kernel manager) is dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._last: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and isinstance(record.msg, BaseException):
            exc = record.msg
        if record.levelno >= logging.ERROR and isinstance(exc, PtcudaError) and http_status(exc) < 500:
            if exc is self._last:
                return False
            self._last = exc
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.msg, record.args = "jupyter-ptcuda: kernel start refused (%d): %s", (http_status(exc), exc)
            record.exc_info, record.exc_text = None, None
        return True


class RefusalAwareSessionRootHandler(SessionRootHandler):
    async def post(self) -> None:  # type: ignore[override]
        try:
            await super().post()  # type: ignore[misc]
        except web.HTTPError as exc:
            cause = refused(exc)
            if cause is None:
                raise
            raise cause from None


handlers = [(r"/api/sessions", RefusalAwareSessionRootHandler)]
