"""A real JupyterHub with the broker as a managed service (examples/jupyterhub_config.py), two real Unix
users (alice the victim, bob the attacker), two fake GPUs in the broker, small ceilings so each attack
reaches them quickly. bob attacks only with what a hostile local user has: his own server's Hub token
(a token of his with the broker's scope) and processes of his own uid (``hub.run_as``)."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from tests.hub import harness as H

ALICE, BOB = H.USERS
KERNEL = "ptcuda-sectest"
LIMITS = {"max_mem": "1g", "max_pids": 4096, "max_long_calls": 4, "max_terminals": 3, "max_private_dirs": 6,
          "max_gpus": 2, "max_kernels": 3}


@pytest.fixture(scope="module")
def hub(engine, test_image):
    if os.geteuid() != 0 or not H.VENV.exists():
        if os.environ.get("CI"):
            pytest.fail("the Hub attack suite needs root and scripts/hub-env (scripts/test runs it)")
        pytest.skip("needs root and scripts/hub-env")
    subprocess.run([str(H.VENV / "bin" / "jupyter-ptcuda"), "kernelspec", "install", "--sys-prefix", "--name", KERNEL,
                    "--image", test_image, "--gpus", "none", "--no-check"], check=True, capture_output=True)
    port = H.free_port()
    limits = "\n".join(f"c.PtcudaBroker.{k} = {v!r}" for k, v in LIMITS.items())
    hub = H.start_hub(extra_config=H.broker_config(port, test_image, f'c.PtcudaBroker.nvml = "fake:2"\n{limits}\n'))
    # an allowed image that says NVIDIA_VISIBLE_DEVICES=all, as the official PyTorch images do
    hub.nvidia_all_image = test_image.split(":")[0] + ":nvidia-all"
    subprocess.run(["docker", "build", "-q", "-t", hub.nvidia_all_image, "-"], check=True, capture_output=True,
                   input=f"FROM {test_image}\nENV NVIDIA_VISIBLE_DEVICES=all\n".encode())
    try:
        H.attach_broker(hub, port, test_image)
        yield hub
    finally:
        H.cleanup(hub)


def call(hub, user: str, op: str, *, token: str | None = None, timeout: float = 60, **body) -> requests.Response:
    """One broker operation as ``user`` (a token of theirs with the broker's scope, as their server has)."""
    token = token or hub.token(user, scopes=["access:services!service=ptcuda-broker"])
    return requests.post(f"{hub.broker_url}/v1/{op}", json=body, headers={"Authorization": f"token {token}"},
                         timeout=timeout)


def launch(hub, user: str, *, spec: dict | None = None, **request) -> requests.Response:
    """What an attacker sends to start a container: the request (the wire format) and, as a second try, the
    same as a spec of his own making with the old wire's claim/assign_gpus (a broker that took specs)."""
    r = call(hub, user, "launch", request=request)
    if r.status_code == 400 and spec is not None:
        r = call(hub, user, "launch", spec=spec, claim=None, assign_gpus=False)
    return r
