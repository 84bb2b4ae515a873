"""Kernel images: derive a kernel-ready image from a PyTorch base, and check that an image is one.

``jupyter ptcuda image build`` (the CLI) calls :func:`build_image`. The steps, each named in errors:

1. **base** — use ``--base IMAGE`` (pulled when missing), or ``--base debian``: debootstrap a Debian
   bookworm root (python3 + pip) and ``docker import`` it, for machines with no container registry.
2. **probe** — run the base once to read its Python, torch and CUDA versions.
3. **wheelhouse** — ``pip download`` ipykernel (and torch, for a Debian base; a ``--preset``'s packages;
   each ``--extra``: :func:`~.presets.install_list`) *on the host*, for the image's Python version and
   platform; containers need no route to a package index.
4. **torchvision** — for a preset that asks for it: the torchvision wheel that pairs with the image's
   torch, looked up where pip finds packages on the host (then PyPI's PyTorch index for a ``+cpu`` /
   ``+cuXXX`` torch); left out, saying why, when none pairs (:mod:`.presets`).
5. **install** — one ``RUN pip install --no-index`` layer, fed by a loopback HTTP server over the
   wheelhouse (build with host networking), so no wheel is copied into a layer.
6. **label** — probe the result and record base, torch, CUDA, Python and ipykernel versions as labels,
   and the top-level modules it can import (:data:`L_MODULES`, read by the jobs' import check).

:func:`probe_modules` answers "can this image import X?" (``importlib.util.find_spec`` in a one-off
probe container); the job import check (:mod:`.jobs.imports`) asks it before a job starts.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .containers import labels as L
from .containers.base import ContainerService
from .containers.build import Policy, Request, build
from .containers.docker.service import DockerContainerService
from .containers.engine import Engine
from .containers.identity import this_server
from .containers.options import DEFAULT_TAG  # the kernel image's default tag (re-exported here)
from .containers.spec import ContainerSpec
from .containers.types import ImageInfo
from .errors import ImageNotReady, PtcudaError
from .presets import PRESETS, add_torchvision, install_list, project_name

DEFAULT_BASE = "pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime"  # CUDA 12.8: first with sm_100/sm_120 (Blackwell)
DEBIAN_BASE_TAG = "jupyter-ptcuda/debian-base:bookworm"
DEBIAN_PACKAGES = "python3,python3-pip,python-is-python3,ca-certificates,procps"

L_BASE, L_TORCH, L_CUDA = L.IMAGE_BASE, L.IMAGE_TORCH, L.IMAGE_CUDA
L_PYTHON, L_IPYKERNEL = L.IMAGE_PYTHON, L.IMAGE_IPYKERNEL
#: Written by the build: the image's top-level importable modules (stdlib left out), space-separated;
#: the preset it was built with; its torchvision ("" when left out).
L_MODULES, L_PRESET, L_TORCHVISION = L.IMAGE_MODULES, L.IMAGE_PRESET, L.IMAGE_TORCHVISION

PROBE = (
    "import json, platform, sys\n"
    "out = {'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine()}\n"
    "try:\n import torch; out['torch'] = torch.__version__; out['cuda'] = torch.version.cuda or ''\n"
    "except Exception as e: out['torch_error'] = repr(e)\n"
    "try:\n import ipykernel; out['ipykernel'] = ipykernel.__version__\n"
    "except Exception as e: out['ipykernel_error'] = repr(e)\n"
    "try:\n import importlib.metadata as md; out['torchvision'] = md.version('torchvision')\n"
    "except Exception: pass\n"
    "print('PTCUDA-PROBE ' + json.dumps(out))\n"
)
#: ``python -c MODULES_PROBE [NAME ...]``: with names, ``{name: importable}`` (``find_spec``, nothing
#: imported); without, every top-level module on sys.path and of installed distributions, stdlib left out.
MODULES_PROBE = (
    "import importlib.util, json, pkgutil, sys\n"
    "if sys.argv[1:]:\n"
    " out = {}\n"
    " for n in sys.argv[1:]:\n"
    "  try: out[n] = importlib.util.find_spec(n) is not None\n"
    "  except Exception: out[n] = False\n"
    "else:\n"
    " names = {m.name for m in pkgutil.iter_modules()}\n"
    " try:\n  import importlib.metadata as md; names |= set(md.packages_distributions())\n"
    " except Exception: pass\n"
    " std = set(getattr(sys, 'stdlib_module_names', ()))\n"
    " out = sorted(n for n in names if n.isidentifier() and n not in std)\n"
    "print('PTCUDA-MODULES ' + json.dumps(out))\n"
)

Progress = Callable[[str], None]


class ImageBuildError(PtcudaError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"image build failed at step '{step}': {message}", step=step)
        self.step = step


def probe_spec(image: str, python: str = "python", code: str = PROBE, args: tuple[str, ...] = ()) -> ContainerSpec:
    """A one-off ``probe`` container running ``python -c code args``: nobody's uid, nothing mounted, no GPU."""
    return build(Request(kind=L.PROBE, image=image, command=(python, "-c", code, *args), workdir="/tmp",
                         mount_workdir=False, shm_size=None, pids_limit=256), Policy(images=(image,)), this_server())


async def probe_image(service: ContainerService, image: str) -> dict[str, Any]:
    """Run ``image`` once and report its Python/torch/ipykernel versions.

    Raises ImageNotFound when absent, ImageNotReady when it has no ``python``.
    """
    await service.image(image)
    code, out, _ = await service.run_once(probe_spec(image), timeout=120)
    for line in out.splitlines():
        if line.startswith("PTCUDA-PROBE "):
            return json.loads(line[len("PTCUDA-PROBE ") :])
    raise ImageNotReady(
        f"image {image!r} cannot run `python` (exit code {code}): {out.strip()[-300:]}. A kernel image "
        f"needs python on PATH; derive one with `jupyter ptcuda image build --base {image}`."
    )


async def probe_modules(service: ContainerService, image: str, names: list[str] | None = None,
                        python: str = "python") -> Any:
    """Ask ``image`` (one probe container) which of ``names`` it can import: ``{name: bool}``; without
    names, the sorted list of its top-level modules (for the build's label). ImageNotReady when it
    cannot run ``python``. Callers: the build (label step), ``jobs.imports`` (the check before a job)."""
    code, out, _ = await service.run_once(probe_spec(image, python, MODULES_PROBE, tuple(names or ())), timeout=120)
    for line in out.splitlines():
        if line.startswith("PTCUDA-MODULES "):
            return json.loads(line[len("PTCUDA-MODULES ") :])
    raise ImageNotReady(f"image {image!r} could not list its Python modules (exit code {code}): {out.strip()[-300:]}")


def engine_imports(engine: Engine, image: str, names: list[str], python: str = "python") -> dict[str, bool]:
    """:func:`probe_modules` on this Docker engine, blocking (the CLI's ``image build --model``)."""
    return dict(asyncio.run(probe_modules(DockerContainerService(engine), image, names, python)))


async def check_kernel_image(service: ContainerService, image: str, info: ImageInfo | None = None) -> dict[str, Any]:
    """Labels or a probe proving ``image`` can run an IPython kernel; ImageNotReady with the fix if not.
    ``info``: the image's inspect when the caller has it (not asked for again)."""
    labels = (info or await service.image(image)).labels
    if labels.get(L_IPYKERNEL):
        return {"ipykernel": labels[L_IPYKERNEL], "torch": labels.get(L_TORCH), "cuda": labels.get(L_CUDA)}
    probe = await probe_image(service, image)
    if "ipykernel" not in probe:
        raise ImageNotReady(
            f"image {image!r} has no ipykernel ({probe.get('ipykernel_error', 'not importable')}): run "
            f"`jupyter ptcuda image build --base {image} --tag {image.split(':')[0]}:kernel` and use that tag."
        )
    return probe


def apt_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line sources), else deb.debian.org."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                return [p for p in line.split()[1:] if "://" in p][0]
    return "http://deb.debian.org/debian"


def _run_step(step: str, cmd: list[str], progress: Progress) -> None:
    progress(f"[{step}] $ {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        progress(f"[{step}] {line}")
    if proc.wait() != 0:
        raise ImageBuildError(step, f"`{cmd[0]}` exited with {proc.returncode}:\n" + "\n".join(tail))


def build_debian_base(engine: Engine, progress: Progress, tag: str = DEBIAN_BASE_TAG, rebuild: bool = False) -> str:
    """debootstrap + import a Debian bookworm base with python3; cached by tag. Blocking (CLI)."""
    if not rebuild:
        try:
            engine.run_sync(lambda api: api.inspect_image(tag))
            progress(f"[debian-base] reusing {tag}")
            return tag
        except PtcudaError:
            pass
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debian-base", "debootstrap is not installed: `apt-get install debootstrap`.")
    if os.geteuid() != 0:
        raise ImageBuildError("debian-base", "debootstrap needs root: run this command with sudo.")
    with tempfile.TemporaryDirectory(prefix="ptcuda-debootstrap-") as tmp:
        root = Path(tmp) / "root"
        _run_step("debian-base", ["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}",
                                  "bookworm", str(root), apt_mirror()], progress)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        tarpath = Path(tmp) / "rootfs.tar"
        progress("[debian-base] packing the root file system")
        with tarfile.open(tarpath, "w") as tar:
            tar.add(root, arcname=".")
        repo, _, name_tag = tag.rpartition(":")
        progress(f"[debian-base] docker import → {tag}")
        engine.run_sync(lambda api: api.import_image_from_file(
            str(tarpath), repository=repo, tag=name_tag, changes=['CMD ["python3"]', "ENV LANG=C.UTF-8"]))
    return tag


def _platform_args(python: str, machine: str) -> list[str]:
    arch = {"aarch64": "aarch64", "arm64": "aarch64"}.get(machine, "x86_64")
    platforms = [f"manylinux_2_{n}_{arch}" for n in range(17, 40)] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for plat in platforms:
        args += ["--platform", plat]
    return args


def download_wheels(dest: Path, requirements: list[str], python: str, machine: str, progress: Progress,
                    options: tuple[str, ...] = (), step: str = "wheelhouse") -> None:
    """pip download ``requirements`` on the host for the image's Python version and platform."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-d", str(dest),
           *_platform_args(python, machine), *options]
    _run_step(step, cmd + requirements, progress)


def torch_version_of(probe: dict[str, Any], wheels: Path) -> str | None:
    """The image's torch: the base's (probe), else the version of the torch wheel in the wheelhouse."""
    if probe.get("torch"):
        return str(probe["torch"])
    for wheel in sorted(wheels.glob("torch-*.whl")):
        return wheel.name.split("-")[1]
    return None


class _WheelServer:
    """Serves a wheelhouse on 127.0.0.1 for the length of a build (the build uses host networking)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _WheelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _docker_build(engine: Engine, dockerfile: str, tag: str, step: str, progress: Progress,
                  files: dict[str, bytes] | None = None) -> str:
    """Build ``dockerfile`` (its context: only ``files``, name → bytes) as ``tag``; the image id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("Dockerfile", dockerfile.encode()), *(files or {}).items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return docker_build(engine, buf, tag, step, progress)


def docker_build(engine: Engine, context: IO[bytes], tag: str, step: str, progress: Progress,
                 network_mode: str = "host") -> str:
    """Build the tar ``context`` (its ``Dockerfile`` included; an open file, read as it is sent) as ``tag``,
    never pulling; the image id. ``network_mode``: the build's ``RUN`` steps' network (``host``: the loopback
    wheel server; ``none``: a build that needs none). Blocking. Callers: :func:`build_image`,
    :mod:`.jobs.model_image`."""
    def build(api: Any) -> str:
        image_id = ""
        for chunk in api.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                               decode=True, network_mode=network_mode, pull=False):
            if "error" in chunk:
                raise ImageBuildError(step, chunk["error"].strip())
            text = (chunk.get("stream") or chunk.get("status") or "").rstrip()
            if text:
                progress(f"[{step}] {text}")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
        return image_id or tag

    return engine.run_sync(build, what=f"docker build ({step})")


def build_image(engine: Engine, *, base: str = DEFAULT_BASE, tag: str = DEFAULT_TAG, torch: str = "torch",
                extra: list[str] | None = None, preset: str | None = None, pull: bool = True,
                progress: Progress = print, wheelhouse: str | None = None, sbom: bool = True, sbom_file: str | None = None
                ) -> dict[str, Any]:
    """Build a kernel image (blocking; called by the CLI). Returns the probe of the result.

    ``preset``: a name in :data:`~.presets.PRESETS` (``datasci``); ``extra``: more requirements (an extra
    naming a preset package replaces it). ``sbom``: put a CycloneDX SBOM of the result (:mod:`.sbom`) in
    the image at :data:`.sbom.IMAGE_PATH`, named by label :data:`.sbom.L_SBOM`; ``sbom_file``: also write
    it there on the host.
    """
    if preset is not None and preset not in PRESETS:
        raise ImageBuildError("base", f"unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
    if sbom:
        from .sbom import SbomError, cyclonedx_command

        try:
            cyclonedx_command()  # before the long part: say now that the SBOM tool is missing
        except SbomError as exc:
            raise ImageBuildError("sbom", f"{exc.message} Or build without one: --no-sbom.") from None
    base_label = base
    debian = base in ("debian", "debian:bookworm")
    wanted = install_list(debian=debian, torch=torch, preset=preset, extra=list(extra or []))
    if debian:
        base = build_debian_base(engine, progress)
        base_label = f"debian:bookworm (debootstrap) + {torch}"
    else:
        try:
            engine.run_sync(lambda api: api.inspect_image(base))
        except PtcudaError:
            if not pull:
                raise ImageBuildError("base", f"{base} is not present and --no-pull was given.") from None
            progress(f"[base] pulling {base}")
            try:
                engine.run_sync(lambda api: [None for _ in api.pull(base, stream=True, decode=True)])
                engine.run_sync(lambda api: api.inspect_image(base))
            except PtcudaError as exc:
                raise ImageBuildError("base", f"cannot pull {base} ({exc.message.splitlines()[0]}). "
                                      "Without a registry, build from Debian: --base debian.") from None
    progress(f"[probe] reading versions from {base}")
    base_probe = asyncio.run(probe_image(DockerContainerService(engine), base))
    if "torch" not in base_probe and base_label == base:
        raise ImageBuildError("probe", f"{base} has no torch ({base_probe.get('torch_error')}): "
                              "choose a PyTorch base image, or --base debian.")
    if preset:
        progress(f"[wheelhouse] preset {preset}: {', '.join(PRESETS[preset].packages)}")
    with tempfile.TemporaryDirectory(prefix="ptcuda-wheels-") as tmp:
        wheels = Path(wheelhouse) if wheelhouse else Path(tmp)
        if not wheelhouse:
            download_wheels(wheels, wanted, base_probe["python"], base_probe.get("machine", "x86_64"), progress)
        install = list(wanted)
        if preset and PRESETS[preset].torchvision and "torchvision" not in map(project_name, install):
            python, machine = base_probe["python"], base_probe.get("machine", "x86_64")

            def fetch(dest: Path, reqs: list[str], options: tuple[str, ...]) -> None:
                download_wheels(dest, reqs, python, machine, progress, options, "torchvision")

            vision = add_torchvision(wheels, torch_version_of(base_probe, wheels), base_probe, progress,
                                     fetch=None if wheelhouse else fetch)
            install += [vision] if vision else []
        names = " ".join(_shell_quote(w) for w in install)
        with _WheelServer(wheels) as server:
            dockerfile = (
                f"FROM {base}\n"
                f"RUN PIP_BREAK_SYSTEM_PACKAGES=1 python -m pip install --no-cache-dir --no-index "
                f"--disable-pip-version-check --find-links {server.url} {names}\n"
            )
            stage = _docker_build(engine, dockerfile, f"{tag}-stage", "install", progress)
    progress("[label] probing the result")
    service = DockerContainerService(engine)
    probe = asyncio.run(probe_image(service, stage))
    if "ipykernel" not in probe:
        raise ImageBuildError("label", f"ipykernel is not importable in the result: {probe.get('ipykernel_error')}")
    modules = asyncio.run(probe_modules(service, stage))
    labels = {L_BASE: base_label, L_TORCH: probe.get("torch", ""), L_CUDA: probe.get("cuda", ""),
              L_PYTHON: probe["python"], L_IPYKERNEL: probe["ipykernel"], L_MODULES: " ".join(modules),
              L_TORCHVISION: probe.get("torchvision", "")}
    if preset:
        labels[L_PRESET] = preset
    files: dict[str, bytes] = {}
    copy = ""
    if sbom:
        from . import sbom as S

        progress(f"[sbom] cyclonedx-py environment over {stage}'s Python distributions")
        try:
            files["sbom.cdx.json"] = S.dumps(S.image_sbom(service, probe_spec(stage, code=S.METADATA_PROBE)))
        except S.SbomError as exc:
            raise ImageBuildError("sbom", exc.message) from None
        labels[S.L_SBOM], labels[S.L_SBOM_SHA256] = S.IMAGE_PATH, S.sha256(files["sbom.cdx.json"])
        copy = f"COPY sbom.cdx.json {S.IMAGE_PATH}\n"
    label_line = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
    _docker_build(engine, f"FROM {stage}\n{copy}{label_line}\n", tag, "label", progress, files)
    if sbom:
        progress(f"[sbom] in the image at {labels[S.L_SBOM]} (label {S.L_SBOM})")
        if sbom_file:
            Path(sbom_file).write_bytes(files["sbom.cdx.json"])
            progress(f"[sbom] and in {sbom_file}")
    engine.run_sync(lambda api: api.remove_image(f"{tag}-stage", noprune=True))
    vision_note = (f", torchvision {labels[L_TORCHVISION] or 'left out (see [torchvision] above)'}"
                   if preset and PRESETS[preset].torchvision else "")
    progress(f"built {tag}: torch {labels[L_TORCH]} (CUDA {labels[L_CUDA] or 'none: CPU build'}), "
             f"python {labels[L_PYTHON]}, ipykernel {labels[L_IPYKERNEL]}"
             + (f", preset {preset}" if preset else "") + vision_note)
    return {"tag": tag, **probe, "labels": labels, "installed": install}


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
