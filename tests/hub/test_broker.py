"""The broker under a real JupyterHub: two Unix users, LocalProcessSpawner, the broker as a managed service
started from examples/jupyterhub_config.py, the real engine (stand-in NVIDIA hook, two fake GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.hub import harness as H

pytestmark = [pytest.mark.integration, pytest.mark.hub]

ALICE, BOB = H.USERS
KERNEL = "ptcuda-hubtest"
GPU_KERNEL = "ptcuda-hubtest-gpu"
IDLE_TIMEOUT = 6


@pytest.fixture(scope="module")
def hub(engine, test_image):
    H.require_hub()
    subprocess.run([str(H.VENV / "bin" / "jupyter-ptcuda"), "kernelspec", "install", "--sys-prefix", "--name", KERNEL,
                    "--image", test_image, "--gpus", "none", "--no-check"], check=True, capture_output=True)
    subprocess.run([str(H.VENV / "bin" / "jupyter-ptcuda"), "kernelspec", "install", "--sys-prefix", "--name",
                    GPU_KERNEL, "--image", test_image, "--gpus", "1", "--no-check"], check=True, capture_output=True)
    port = H.free_port()
    hub = H.start_hub(extra_config=H.broker_config(port, test_image, f"""
c.PtcudaBroker.nvml = "fake:2:idle=0+1"
c.PtcudaBroker.idle_gpu_timeout = {IDLE_TIMEOUT}
c.PtcudaBroker.idle_check_interval = 1
c.PtcudaBroker.max_gpus = 1
c.PtcudaBroker.max_kernels = 2
"""))
    try:
        H.attach_broker(hub, port, test_image)
        for user in H.USERS:
            hub.start_server(user)
        yield hub
    finally:
        H.cleanup(hub)


def broker(hub, user: str, op: str, **body):
    token = hub.token(user, scopes=["access:services!service=ptcuda-broker"])
    return requests.post(f"{hub.broker_url}/v1/{op}", json=body, headers={"Authorization": f"token {token}"}, timeout=120)


WHO = "import os, json; print(json.dumps({'uid': os.getuid(), 'cwd': os.getcwd(), 'id': os.environ.get('JUPYTER_PTCUDA_KERNEL_ID')}))"


def test_each_user_s_kernel_runs_as_them_in_their_folder_through_the_broker(hub, engine, monkeypatch):
    plain = hub.user_api

    def in_root_folder(user, method, path, **kw):  # as JupyterLab does for a notebook at the server's root
        if method == "POST" and path == "api/kernels":
            return requests.post(f"{hub.url}/user/{user}/api/kernels", json={**kw, "path": ""}, timeout=60,
                                 headers={"Authorization": f"token {hub.token(user)}"})
        return plain(user, method, path, **kw)

    monkeypatch.setattr(hub, "user_api", in_root_folder)
    for user in H.USERS:
        acct = hub.account(user)
        out = json.loads(hub.kernel_run(user, WHO + "\nopen('from-kernel.txt', 'w').write('x')", kernel=KERNEL,
                                        timeout=120).strip().splitlines()[-1])
        assert out["uid"] == acct.pw_uid and out["cwd"] == acct.pw_dir
        assert (Path(acct.pw_dir) / "from-kernel.txt").stat().st_uid == acct.pw_uid
    # the users' servers hold no Docker socket: the broker started every one of these containers
    for user in H.USERS:
        proc = hub.run_as(user, [str(H.VENV / "bin" / "python"), "-c",
                                 "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock')"])
        assert proc.returncode != 0 and "Permission" in proc.stderr


def test_a_user_cannot_touch_the_other_user_s_containers(hub, engine, test_image):
    home = hub.account(ALICE).pw_dir
    request = {"kind": "job", "id": "alicejob1", "image": test_image, "command": ["sleep", "60"], "workdir": home,
               "env": {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "all", "MINE": "1"}}
    r = broker(hub, ALICE, "launch", request={**request, "user": "0:0"})  # a spec's field: refused, not ignored
    assert r.status_code == 400 and "unknown field(s) user" in r.json()["message"]
    r = broker(hub, ALICE, "launch", request=request)
    assert r.status_code == 200, r.text
    cid = r.json()["result"]["id"]
    try:
        info = engine.run_sync(lambda api: api.inspect_container(cid))
        assert info["Config"]["User"] == f"{hub.account(ALICE).pw_uid}:{hub.account(ALICE).pw_gid}"  # not 0:0
        assert info["HostConfig"]["CapDrop"] == ["ALL"]
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])  # no GPU behind the ledger's back
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and "NVIDIA_DRIVER_CAPABILITIES" not in env and env["MINE"] == "1"
        assert info["Config"]["Labels"]["io.jupyter-ptcuda.owner"] == ALICE
        for op, extra in [("logs", {}), ("log_bytes", {}), ("wait", {}), ("spec_of", {}), ("signal", {"signal": "SIGKILL"}),
                          ("exec", {"cmd": ["id"]})]:
            r = broker(hub, BOB, op, cid=cid, **extra)
            assert r.status_code == 404 and "of yours" in r.json()["message"], (op, r.text)
        assert broker(hub, BOB, "inspect", cid=cid).json()["result"] is None
        assert broker(hub, BOB, "remove", cid=cid).status_code == 200
        assert cid not in [s["id"] for s in broker(hub, BOB, "list", kind="job").json()["result"]]
        assert engine.run_sync(lambda api: api.inspect_container(cid))["State"]["Running"]  # still there
        assert cid in [s["id"] for s in broker(hub, ALICE, "list", kind="job").json()["result"]]
        code = broker(hub, ALICE, "exec", cid=cid, cmd=["id", "-u"]).json()["result"]
        assert code["code"] == 0
    finally:
        broker(hub, ALICE, "remove", cid=cid)
    # no token, another service's token, a token without the broker's scope
    assert requests.post(f"{hub.broker_url}/v1/list", json={}, timeout=10).status_code == 403
    bare = hub.token(ALICE, scopes=["read:users:name!user"], fresh=True)
    r = requests.post(f"{hub.broker_url}/v1/list", json={}, headers={"Authorization": f"token {bare}"}, timeout=10)
    assert r.status_code == 403 and "access:services!service=ptcuda-broker" in r.json()["message"]


def test_the_broker_s_policy_refuses_with_a_sentence(hub, test_image, tmp_path):
    home = hub.account(ALICE).pw_dir
    base = {"kind": "job", "id": "j2", "image": test_image, "command": ["true"], "workdir": home}

    def launch(**change):
        return broker(hub, ALICE, "launch", request={**base, **change})

    r = launch(image="busybox:latest")
    assert r.status_code == 403 and "c.PtcudaBroker" in r.json()["message"]
    r = launch(mounts=[{"source": "/usr/share", "target": "/host-share"}])
    assert r.status_code == 403 and "outside the folders" in r.json()["message"]
    bob_home = hub.account(BOB).pw_dir
    r = launch(mounts=[{"source": bob_home, "target": "/bob"}])
    assert r.status_code == 403
    link = Path(home) / "etc-link"
    hub.run_as(ALICE, ["ln", "-sfn", "/etc", str(link)])
    r = launch(mounts=[{"source": str(link), "target": "/x"}])
    assert r.status_code == 403 and "symbolic link" in r.json()["message"]
    r = launch(ports={"8888": 8888})
    assert r.status_code == 400 and "unknown field(s) ports" in r.json()["message"]
    r = launch(network_mode="host")
    assert r.status_code == 403
    r = launch(kind="netns")
    assert r.status_code == 403
    r = launch(gpus="count:2")
    assert r.status_code == 409 and "c.PtcudaBroker.max_gpus = 1" in r.json()["message"]


def test_the_other_user_cannot_reach_a_kernel_s_channels(hub):
    """alice's kernel's ipc sockets live in a folder the broker made for her (0700): bob cannot connect."""
    r = hub.user_api(ALICE, "POST", "api/kernels", name=KERNEL)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    try:
        folder = broker(hub, ALICE, "private_dir", kernel_id=kid).json()["result"]
        st = os.stat(folder)
        assert st.st_uid == hub.account(ALICE).pw_uid and st.st_mode & 0o777 == 0o700
        sockets = [p for p in os.listdir(folder) if p.startswith("kernel-")]
        assert sockets
        proc = hub.run_as(BOB, [str(H.VENV / "bin" / "python"), "-c",
                                f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({os.path.join(folder, sockets[0])!r})"])
        assert proc.returncode != 0 and "Permission" in proc.stderr
        # and bob's broker cannot make (or reuse) a folder under alice's uid
        mine = broker(hub, BOB, "private_dir", kernel_id=kid).json()["result"]
        assert mine != folder and str(hub.account(BOB).pw_uid) in mine
    finally:
        hub.user_api(ALICE, "DELETE", f"api/kernels/{kid}")


def test_gpus_across_users_are_exclusive_and_another_user_s_holder_is_not_named(hub, test_image):
    def job(user, job_id, gpus):
        home = hub.account(user).pw_dir
        return broker(hub, user, "launch", request={
            "kind": "job", "id": job_id, "image": test_image, "command": ["sleep", "60"], "workdir": home, "gpus": gpus})

    r = job(ALICE, "gpujob-a", "count:1")
    assert r.status_code == 200, r.text
    cid = r.json()["result"]["id"]
    held = r.json()["result"]["spec"]["gpus"]["ids"]
    try:
        assert len(held) == 1
        r = job(BOB, "gpujob-b", held)
        assert r.status_code == 409 and "held by another user" in r.json()["message"]
        assert "gpujob-a" not in r.json()["message"]
        r = job(BOB, "gpujob-a", held)  # the same job id as alice's: still hers
        assert r.status_code == 409, r.text
        r = job(ALICE, "gpujob-a2", "count:1")
        assert r.status_code == 409 and "max_gpus = 1" in r.json()["message"]
        r = job(BOB, "gpujob-b", "count:1")  # the other GPU
        assert r.status_code == 200, r.text
        assert r.json()["result"]["spec"]["gpus"]["ids"] != held
        broker(hub, BOB, "remove", cid=r.json()["result"]["id"])
    finally:
        broker(hub, ALICE, "remove", cid=cid)


def test_a_job_outlives_its_user_s_server_and_is_there_after_a_restart(hub, engine, test_image):
    home = Path(hub.account(ALICE).pw_dir)
    hub.run_as(ALICE, ["sh", "-c", "printf 'import time\\nprint(\"from the job\", flush=True)\\ntime.sleep(15)\\n"
                                   "raise SystemExit(3)\\n' > outlive.py"])
    r = requests.post(f"{hub.url}/user/{ALICE}/jupyter-ptcuda/jobs", json={"path": "outlive.py", "image": test_image,
                      "gpus": "none"}, headers={"Authorization": f"token {hub.token(ALICE)}"}, timeout=120)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def running() -> bool:
        return any(c["running"] for c in broker(hub, ALICE, "list", kind="job").json()["result"]
                   if c["labels"].get("io.jupyter-ptcuda.job-id") == job_id)

    _wait("the job's container to run", running, timeout=60)
    hub.stop_server(ALICE)
    try:
        assert running()  # the server is gone, the job is not (it runs 15 s)
        # the broker restarts meanwhile: it holds nothing a restart loses (labels are the truth)
        hub.restart_service("ptcuda-broker")
        hub.wait_url(f"{hub.broker_url}/v1/whoami", timeout=30)
    finally:
        hub.start_server(ALICE)
    deadline = time.monotonic() + 60
    while (job := hub.user_api(ALICE, "GET", f"jupyter-ptcuda/jobs/{job_id}").json())["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert (job["state"], job["exit_code"]) == ("failed", 3), job
    log = hub.user_api(ALICE, "GET", f"jupyter-ptcuda/jobs/{job_id}/log").text
    assert "from the job" in log
    assert (home / "outputs" / job_id).stat().st_uid == hub.account(ALICE).pw_uid


def _wait(what, fn, timeout=60.0, step=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def test_the_panel_shows_the_broker_s_gpus_and_another_user_s_holder_without_naming_it(hub):
    home = hub.account(ALICE).pw_dir
    kid = "paneljob1"  # a job (never reclaimed as idle) holding one GPU
    r = broker(hub, ALICE, "launch", request={"kind": "job", "id": kid, "image": hub.test_image, "command": ["sleep", "120"],
                                              "workdir": home, "gpus": "count:1"})
    assert r.status_code == 200, r.text
    cid = r.json()["result"]["id"]
    try:
        def held(user):
            body = hub.user_api(user, "GET", "jupyter-ptcuda/gpus").json()
            snap = body["snapshot"]
            return body if snap["state"] == "ok" and any(g["holders"] for g in snap["gpus"]) else None

        mine, theirs = _wait("alice's holder in the panels", lambda: (a := held(ALICE)) and (b := held(BOB)) and (a, b))
        # the users' servers read no NVML: the GPUs are the broker's (two fake H100s), history included
        assert [g["name"] for g in theirs["snapshot"]["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
        assert all(len(h["t"]) > 0 for h in theirs["history"].values())
        [gpu] = [g for g in mine["snapshot"]["gpus"] if g["holders"]]
        assert [(h["kind"], h["id"]) for h in gpu["holders"]] == [("job", kid)]
        [other] = [g for g in theirs["snapshot"]["gpus"] if g["index"] == gpu["index"]][0]["holders"]
        assert other["kind"] == "other" and other["owner"] == "another user" and not other["id"]
        assert kid not in json.dumps(theirs) and ALICE not in json.dumps(theirs) and cid[:12] not in json.dumps(theirs)
    finally:
        broker(hub, ALICE, "remove", cid=cid)


def test_an_idle_gpu_kernel_is_shut_down_and_its_user_told_a_busy_one_is_not(hub):
    r = hub.user_api(ALICE, "POST", "api/kernels", name=GPU_KERNEL)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    started = time.time()
    # idle (no cell running, its GPU at 0 %): past c.PtcudaBroker.idle_gpu_timeout its server shuts it down
    _wait("the idle kernel to be shut down", lambda: kid not in [k["id"] for k in hub.user_api(ALICE, "GET", "api/kernels").json()],
          timeout=IDLE_TIMEOUT + 40)
    assert time.time() - started >= IDLE_TIMEOUT
    notices = hub.user_api(ALICE, "GET", "jupyter-ptcuda/notices").json()["notices"]
    [notice] = [n for n in notices if n["kernel_id"] == kid]
    assert notice["kind"] == "idle_gpu_kernel" and "without using it" in notice["message"]
    assert "c.PtcudaBroker.idle_gpu_timeout" in notice["message"]
    assert not [n for n in hub.user_api(BOB, "GET", "jupyter-ptcuda/notices").json()["notices"] if n["kernel_id"] == kid]
    _wait("its container to go", lambda: kid not in [c["labels"].get("io.jupyter-ptcuda.kernel-id") for c in
                                                    broker(hub, ALICE, "list", kind="kernel").json()["result"]], timeout=30)
    assert _wait("the notice to say done", lambda: [n for n in hub.user_api(ALICE, "GET", "jupyter-ptcuda/notices").json()[
        "notices"] if n["kernel_id"] == kid and n["state"] == "done"], timeout=20)
    # a kernel running a cell for twice the timeout is busy, not idle: it finishes
    out = hub.kernel_run(ALICE, f"import time\nt = time.time()\nwhile time.time() - t < {2 * IDLE_TIMEOUT}: pass\n"
                                "print('still here')", kernel=GPU_KERNEL, timeout=120)
    assert "still here" in out
