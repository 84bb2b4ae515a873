"""Images through a registry: push, pin by digest, pull with progress.

Callers: ``jupyter ptcuda image push TAG`` and ``image build --push`` (:func:`push_image`),
``jupyter ptcuda kernelspec install --pin`` (:func:`pin_reference`, :func:`ensure_local`). The Docker
calls go through the engine seam (:meth:`~.containers.engine.Engine.push_sync`, ``pull_sync``,
``registry_digest_sync``), which reads the credentials of *this* process's Docker config
(``$DOCKER_CONFIG``, default ``~/.docker``: what ``docker login REGISTRY`` writes) and turns a registry's
refusal into one sentence with the fix (:func:`~.containers.engine.registry_error`).

Progress (:class:`Progress`): on a terminal one bar redrawn in place; elsewhere (CI, a pipe, ``CI`` set)
a plain line each time a layer changes state, so a CI log shows what happened without a wall of
carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from .containers.engine import Engine
from .errors import ConfigError, NotFound


def split_reference(ref: str) -> tuple[str, str, str]:
    """``(repository, tag, digest)`` of an image reference; tag and digest may be empty.
    A ``:`` after the last ``/`` starts the tag (a registry's port comes before it)."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest
    return name, "", digest


def pinned(ref: str, digest: str) -> str:
    """``REPO@sha256:...``: ``ref``'s repository at ``digest`` (the tag dropped: the digest is the truth)."""
    repo, _, _ = split_reference(ref)
    return f"{repo}@{digest}"


def is_pinned(ref: str) -> bool:
    return "@sha256:" in ref


class Progress:
    """Renders the engine's push/pull events for a person. ``tty`` None: a bar when ``out`` is a terminal
    and ``CI`` is not set; plain lines otherwise. Call :meth:`close` when the stream ends."""

    def __init__(self, ref: str, verb: str = "pushing", out: TextIO | None = None, tty: bool | None = None,
                 clock: Any = time.monotonic) -> None:
        self.ref, self.verb = ref, verb
        self.out = out if out is not None else sys.stderr
        if tty is None:
            tty = bool(getattr(self.out, "isatty", lambda: False)()) and not os.environ.get("CI")
        self.tty = tty
        self.clock = clock
        self.state: dict[str, str] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # layer → (current, total) bytes
        self._drawn = 0.0

    @property
    def totals(self) -> tuple[int, int, int, int]:
        """(bytes sent, bytes to send, layers done, layers) so far."""
        done = sum(s in ("Pushed", "Layer already exists", "Pull complete", "Already exists") for s in self.state.values())
        return (sum(c for c, _ in self.sizes.values()), sum(t for _, t in self.sizes.values()), done, len(self.state))

    def __call__(self, event: dict[str, Any]) -> None:
        layer, status = event.get("id"), str(event.get("status") or "")
        if not status:
            return
        if layer and not status.startswith(("The push refers", "Pulling from")) and len(str(layer)) >= 12:
            detail = event.get("progressDetail") or {}
            if detail.get("total"):
                self.sizes[layer] = (int(detail.get("current") or 0), int(detail["total"]))
            elif status in ("Pushed", "Download complete", "Pull complete") and layer in self.sizes:
                total = self.sizes[layer][1]
                self.sizes[layer] = (total, total)
            changed = self.state.get(layer) != status
            self.state[layer] = status
            if self.tty:
                self._bar()
            elif changed:
                size = self.sizes.get(layer)
                extra = f" ({size[1] / 1e6:.1f} MB)" if size and status in ("Pushed", "Pull complete") else ""
                print(f"{self.verb} {self.ref}: layer {layer} {status.lower()}{extra}", file=self.out, flush=True)
        elif not self.tty:
            print(f"{self.verb} {self.ref}: {status}", file=self.out, flush=True)

    def _bar(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        sent, total, done, layers = self.totals
        frac = sent / total if total else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        print(f"\r{self.verb} {self.ref} [{bar}] {frac:4.0%} {sent / 1e6:.1f}/{total / 1e6:.1f} MB, "
              f"{done}/{layers} layers", end="", file=self.out, flush=True)

    def close(self) -> None:
        if self.tty and self.state:
            self._bar(force=True)
            print(file=self.out, flush=True)


def push_image(engine: Engine, ref: str, out: TextIO | None = None, tty: bool | None = None) -> str:
    """Push ``ref`` (a tag naming its registry) and return it pinned: ``REPO@sha256:...``. Progress to
    ``out`` (stderr). Blocking: the CLI. RegistryError (one sentence, with the fix) when the registry refuses."""
    if is_pinned(ref):
        raise ConfigError(f"{ref!r} is a digest: push a tag (REGISTRY/REPO:TAG), e.g. `docker tag {ref} "
                          f"{split_reference(ref)[0]}:TAG` first.")
    progress = Progress(ref, "pushing", out, tty)
    try:
        digest = engine.push_sync(ref, progress)
    finally:
        progress.close()
    sent, total, done, layers = progress.totals
    reused = sum(s == "Layer already exists" for s in progress.state.values())
    print(f"pushed {ref}: {layers} layers ({reused} already in the registry, {total / 1e6:.1f} MB sent); "
          f"digest {digest}", file=progress.out, flush=True)
    return pinned(ref, digest)


def pin_reference(engine: Engine, ref: str) -> str:
    """``ref`` as ``REPO@sha256:...``: the digest the registry named in ``ref`` serves for it now (asked
    with this process's credentials). A reference already pinned is returned as it is. RegistryError with
    the fix when the registry refuses (wrong password, unknown name, TLS); nothing is written before."""
    if is_pinned(ref):
        return ref
    return pinned(ref, engine.registry_digest_sync(ref))


def ensure_local(engine: Engine, ref: str, out: TextIO | None = None, tty: bool | None = None) -> bool:
    """Pull ``ref`` when this engine does not have it (progress to ``out``); True when it pulled."""
    try:
        engine.run_sync(lambda api: api.inspect_image(ref))
        return False
    except NotFound:  # ImageNotFound included
        pass
    progress = Progress(ref, "pulling", out, tty)
    try:
        engine.pull_sync(ref, progress)
    finally:
        progress.close()
    return True
