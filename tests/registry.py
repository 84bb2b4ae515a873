"""A real registry for tests: Debian's ``docker-registry`` (the CNCF distribution registry) on loopback,
with htpasswd authentication, and Docker configs (``DOCKER_CONFIG``) that hold a login to it.

The engine treats 127.0.0.0/8 registries as insecure, so basic auth over plain HTTP works without TLS.
Missing tools are installed with apt-get when running as root (CI); otherwise the tests skip outside
CI and fail in it. A small kernel image (Debian base + ipykernel, no torch) is what the tests push:
the CPU test image is over a gigabyte.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

TINY_KERNEL = "jupyter-ptcuda-test:tiny-kernel"


def _need(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def ensure_tools() -> None:
    """docker-registry and htpasswd (apache2-utils), installed by apt-get as root when missing."""
    if shutil.which("docker-registry") and shutil.which("htpasswd"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "docker-registry", "apache2-utils"]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:  # a fresh machine: no lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
    if not (shutil.which("docker-registry") and shutil.which("htpasswd")):
        _need("no docker-registry/htpasswd: `apt-get install docker-registry apache2-utils` (scripts/test does)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bridge_gateway(engine) -> str:
    """The address of the engine's default bridge on this host (e.g. 172.17.0.1): not loopback, so the
    engine does not treat a registry there as insecure and checks its TLS certificate."""
    net = engine.run_sync(lambda api: api.inspect_network("bridge"))
    return str(net["IPAM"]["Config"][0]["Gateway"])


def make_tls(root: Path, ip: str) -> tuple[Path, Path, Path]:
    """A CA of the test's own, and a server certificate it signed for ``ip``: (ca.crt, server.crt, server.key)."""
    ca_key, ca, key, csr, crt = (root / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = root / "san.cnf"
    ext.write_text(f"subjectAltName = IP:{ip}\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], capture_output=True, check=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=jupyter-ptcuda test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ip}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(crt),
        "-days", "2", "-extfile", str(ext))
    return ca, crt, key


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    user: str
    password: str
    root: Path

    def get(self, path: str, password: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://{self.host}{path}")
        token = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def catalog(self) -> list[str]:
        status, body = self.get("/v2/_catalog")
        assert status == 200, body
        return list(json.loads(body)["repositories"])

    def docker_config(self, folder: Path, password: str | None = None) -> Path:
        """A DOCKER_CONFIG folder logged in to this registry: with the real password by `docker login`;
        with another one written as `docker login` would have (a stale or mistyped credential), since the
        registry refuses to log in with it."""
        folder.mkdir(parents=True, exist_ok=True)
        if password is None:
            done = subprocess.run(["docker", "login", self.host, "-u", self.user, "--password-stdin"],
                                  input=self.password, capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "DOCKER_CONFIG": str(folder)})
            assert done.returncode == 0, done.stderr
        else:
            auth = base64.b64encode(f"{self.user}:{password}".encode()).decode()
            (folder / "config.json").write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return folder


def start_registry(root: Path, *, tls_ip: str | None = None) -> tuple[Registry, subprocess.Popen]:
    """docker-registry serve on a free loopback port, htpasswd auth; waits until /v2/ answers 401.
    ``tls_ip``: on that address instead, over TLS with a certificate of a CA the test makes
    (``root/ca.crt``)."""
    ensure_tools()
    root.mkdir(parents=True, exist_ok=True)
    user, password = "ci", secrets.token_urlsafe(12)
    htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
    (root / "htpasswd").write_text(htpasswd.stdout)
    ip = tls_ip or "127.0.0.1"
    port = free_port(ip)
    tls, scheme, context = "", "http", None
    if tls_ip:
        ca, crt, key = make_tls(root, tls_ip)
        tls, scheme = f", tls: {{certificate: {crt}, key: {key}}}", "https"
        context = ssl.create_default_context(cafile=str(ca))
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'store'}}}\n  delete: {{enabled: true}}\n"
        f"http: {{addr: '{ip}:{port}', secret: {secrets.token_hex(16)}{tls}}}\n"
        f"auth:\n  htpasswd: {{realm: test-registry, path: {root / 'htpasswd'}}}\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 (the process writes to it until it ends)
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    reg = Registry(f"{ip}:{port}", user, password, root)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{scheme}://{reg.host}/v2/", timeout=2, context=context):
                pass
        except urllib.error.HTTPError as e:
            if e.code == 401:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"docker-registry did not answer: {(root / 'registry.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return reg, proc


def tiny_kernel_image(engine) -> str:
    """A kernel image of ~200 MB: the Debian base the CPU test image is built on, plus ipykernel (no
    torch), with the labels `image build` writes. Built once per machine (kept by tag)."""
    from jupyter_ptcuda.containers import labels as L
    from jupyter_ptcuda.errors import NotFound
    from jupyter_ptcuda.images import _docker_build, _WheelServer, build_debian_base, download_wheels

    try:
        engine.run_sync(lambda api: api.inspect_image(TINY_KERNEL))
        return TINY_KERNEL
    except NotFound:
        pass
    base = build_debian_base(engine, lambda line: None)  # reused: the CPU test image was built on it
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        download_wheels(Path(tmp), ["ipykernel"], "3.11", "x86_64", lambda line: None)
        with _WheelServer(Path(tmp)) as server:
            labels = {L.IMAGE_BASE: base, L.IMAGE_TORCH: "", L.IMAGE_CUDA: "", L.IMAGE_PYTHON: "3.11",
                      L.IMAGE_IPYKERNEL: "installed"}
            _docker_build(engine, f"FROM {base}\n"
                          "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python -m pip install --no-cache-dir --no-index "
                          f"--disable-pip-version-check --find-links {server.url} ipykernel\n"
                          "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()) + "\n",
                          TINY_KERNEL, "tiny", lambda line: None)
    return TINY_KERNEL


def fresh_image(engine, base: str, ref: str) -> str:
    """``base`` plus a label naming ``ref``, tagged ``ref``: an image of its own id (its repo digests are
    only what the test gives it), removable with ``docker rmi -f ID``. Returns the id."""
    from jupyter_ptcuda.images import _docker_build

    return _docker_build(engine, f"FROM {base}\nLABEL test.registry={json.dumps(ref)}\n", ref, "t", lambda line: None)
