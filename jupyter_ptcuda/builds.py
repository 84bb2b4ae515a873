"""Image builds in progress, where a server can read them: one status file per ``jupyter ptcuda image build``.

The CLI (:class:`BuildStatus`, fed each progress line of :func:`~.images.build_image`) writes
``<jupyter runtime dir>/jupyter_ptcuda/builds/<id>.json`` — the tag, the step (n of m, its name), the last
line, the state (``running`` → ``built`` | ``failed``), its pid and host — atomically (a temporary file
renamed over it), when the step changes and at most every ``interval`` seconds in between; the folder and
files are the user's alone (0700/0600). The runtime dir is per user (``$JUPYTER_RUNTIME_DIR``), so a
server reads the builds of its own user.

Readers: ``GET jupyter-ptcuda/builds`` (the GPU panel: "building IMAGE: step 4/6 installing packages") and
the kernel provisioner, which refuses to start a kernel on an image a build is still making, saying so
(:func:`building`). A ``running`` build whose process is gone (same host) reads as ``interrupted``;
finished builds are listed for :data:`KEEP_S` seconds, and their files removed after a day.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import pid_alive

#: The steps of a build, in order (:mod:`.images`; ``debian-base`` and ``torchvision`` count as theirs).
STEPS = ("base", "probe", "wheelhouse", "install", "label", "sbom")
#: The steps of ``image build --model`` (:mod:`.jobs.model_image`).
MODEL_STEPS = ("model", "base", "download", "build")
STEP_NAMES = {"base": "getting the base image", "probe": "reading its versions", "wheelhouse": "downloading wheels",
              "install": "installing packages", "label": "labelling the image", "sbom": "writing the SBOM",
              "model": "finding the model", "download": "downloading the model", "build": "building the image"}
ALIASES = {"debian-base": "base", "torchvision": "wheelhouse"}
#: Seconds a finished build stays listed; files of builds older than :data:`FORGET_S` are removed.
KEEP_S = 600
FORGET_S = 86400


def builds_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / "jupyter_ptcuda" / "builds"


def same_image(a: str, b: str) -> bool:
    """Whether two references name the same tag (``img`` is ``img:latest``)."""
    def norm(ref: str) -> str:
        last = ref.rsplit("/", 1)[-1]
        return ref if ("@" in ref or ":" in last) else ref + ":latest"
    return norm(a) == norm(b)


class BuildStatus:
    """The status file of one build; :meth:`line` for each progress line, :meth:`finish` at the end."""

    def __init__(self, tag: str, *, steps: tuple[str, ...] = STEPS, directory: Path | None = None,
                 interval: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory or builds_dir()
        self.clock, self.interval = clock, interval
        self.steps = list(steps)
        now = clock()
        self.data: dict[str, Any] = {
            "id": uuid.uuid4().hex[:12], "tag": tag, "state": "running", "step": 0, "steps": len(self.steps),
            "step_name": "", "last_line": "", "started": now, "updated": now, "pid": os.getpid(),
            "host": socket.gethostname(), "error": None}
        self._written = 0.0
        self._write()

    @property
    def path(self) -> Path:
        return self.directory / f"{self.data['id']}.json"

    def line(self, text: str) -> None:
        """One progress line ("[install] Collecting torch…"): its step, if it names one, and the last line."""
        self.data["last_line"] = text.strip()[-300:]
        step = ALIASES.get(text[1:].split("]", 1)[0], text[1:].split("]", 1)[0]) if text.startswith("[") else ""
        changed = step in self.steps and self.steps.index(step) + 1 != self.data["step"]
        if changed:
            self.data["step"], self.data["step_name"] = self.steps.index(step) + 1, STEP_NAMES[step]
        if changed or self.clock() - self._written >= self.interval:
            self._write()

    def finish(self, error: str | None = None) -> None:
        self.data.update(state="failed" if error else "built", error=error, finished=self.clock())
        self._write()

    def _write(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.data["updated"] = self._written = self.clock()
            fd, tmp = tempfile.mkstemp(prefix=".build-", dir=self.directory)  # 0600
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)
        except OSError:  # a read-only runtime dir: the build goes on, only the server does not see it
            pass


def read_builds(directory: Path | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """The builds running now and those finished in the last :data:`KEEP_S` seconds, newest first. Blocking
    (a folder read): callers in a server run it in a thread."""
    directory = directory or builds_dir()
    now = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith(".")]
    except OSError:
        return []
    host = socket.gethostname()
    for name in names:
        path = directory / name
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("tag"), str):
            continue
        if data.get("state") == "running" and data.get("host") == host and not pid_alive(int(data.get("pid") or 0)):
            data["state"] = "interrupted"
        ended = float(data.get("finished") or data.get("updated") or 0)
        if data.get("state") != "running" and now - ended > FORGET_S:
            try:
                path.unlink()
            except OSError:
                pass
        if data.get("state") == "running" or now - ended <= KEEP_S:
            data["message"] = describe(data)
            out.append(data)
    return sorted(out, key=lambda b: -float(b.get("started") or 0))


def building(tag: str, directory: Path | None = None) -> dict[str, Any] | None:
    """The running build that is making ``tag``, if any (blocking: a folder read)."""
    return next((b for b in read_builds(directory) if b["state"] == "running" and same_image(b["tag"], tag)), None)


def describe(build: dict[str, Any]) -> str:
    """"building IMAGE: step 4/6 installing packages", "built IMAGE", "build of IMAGE failed: ..."."""
    tag, state = build.get("tag"), build.get("state")
    if state == "running":
        step = f": step {build['step']}/{build['steps']} {build['step_name']}" if build.get("step") else ": starting"
        return f"building {tag}{step}"
    if state == "built":
        return f"built {tag}"
    if state == "interrupted":
        return f"the build of {tag} stopped without finishing (its process is gone)"
    return f"the build of {tag} failed: {build.get('error') or 'see its output'}"
