"""The attacks a second Unix user ran against the broker (issue: "the broker must be a real boundary"),
each performed again here as bob against alice through the real Hub and broker, each asserting the harm
did not happen. Every attack sends what the attacker would: a request, and the same as a spec of his own
making (the old wire format), so a broker that took client-built specs fails these tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.hub import harness as H
from tests.security.hub.conftest import ALICE, BOB, KERNEL, LIMITS, call, launch

pytestmark = [pytest.mark.integration, pytest.mark.hub]

SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, until = sys.argv[1].encode(), sys.argv[2].encode(), time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE: the folder and the link trade places, atomically
"""


def inspect(engine, cid):
    return engine.run_sync(lambda api: api.inspect_container(cid))


def env_of(info) -> dict[str, str]:
    return dict(e.split("=", 1) for e in info["Config"]["Env"])


def remove_all(hub, user):
    for c in call(hub, user, "list").json().get("result") or []:
        call(hub, user, "remove", cid=c["id"])


def test_a_symlink_swapped_in_a_loop_never_mounts_another_user_s_folder(hub, engine):
    alice, bob = hub.account(ALICE), hub.account(BOB)
    project = Path(alice.pw_dir) / "project"
    hub.run_as(ALICE, ["sh", "-c", f"mkdir -p {project} && chmod 0755 {project} && echo alice-secret > {project}/secret.txt"])
    before = os.stat(project)
    proj, swap = Path(bob.pw_dir) / "proj", Path(bob.pw_dir) / "swap"
    hub.run_as(BOB, ["sh", "-c", f"rm -rf {proj} {swap}; mkdir {proj} && ln -s {project} {swap}"])
    swapper = subprocess.Popen([str(H.VENV / "bin" / "python"), "-c", SWAPPER, str(proj), str(swap), "90"],
                               user=bob.pw_uid, group=bob.pw_gid, extra_groups=[], cwd=bob.pw_dir)
    outputs, statuses = [], []
    script = "cat /data/secret.txt 2>/dev/null; touch /data/pwned 2>/dev/null; echo done"
    files = [{"path": "/data/.x/f", "data": base64.b64encode(b"x").decode(), "mode": 0o777, "dir_mode": 0o777}]
    try:
        for i in range(12):
            r = launch(hub, BOB, kind="job", id=f"race{i}", image=hub.test_image, command=["sh", "-c", script],
                       mounts=[{"source": str(proj), "target": "/data"}],
                       spec={"image": hub.test_image, "command": ["sh", "-c", script], "files": files,
                             "labels": {"io.jupyter-ptcuda.kind": "job", "io.jupyter-ptcuda.job-id": f"race{i}"},
                             "mounts": [{"source": str(proj), "target": "/data"}]})
            statuses.append(r.status_code)
            if r.status_code == 200:
                cid = r.json()["result"]["id"]
                call(hub, BOB, "wait", cid=cid)
                outputs.append(call(hub, BOB, "logs", cid=cid).json()["result"])
                call(hub, BOB, "remove", cid=cid)
            else:
                assert r.status_code < 500, r.text
    finally:
        swapper.kill()
        swapper.wait()
        hub.run_as(BOB, ["rm", "-rf", str(proj), str(swap)])
    assert outputs, f"no launch went through (statuses {statuses}): the race was not exercised"
    assert not any("alice-secret" in out for out in outputs), outputs
    after = os.stat(project)
    assert not (project / "pwned").exists() and not (project / ".x").exists()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


def test_files_go_only_where_the_broker_puts_them_never_through_a_mount(hub):
    bob = hub.account(BOB)
    data = b64 = base64.b64encode(b'{"key": "x"}').decode()
    for path in ("/data/kernel.json", "/run/ptcuda/../../data/x", "/run/ptcuda/sub/kernel.json"):
        r = launch(hub, BOB, kind="kernel", id="filek", image=hub.test_image, command=["true"],
                   mounts=[{"source": bob.pw_dir, "target": "/data"}], files=[{"path": path, "data": data}])
        assert r.status_code == 400 and "/run/ptcuda" in r.json()["message"], r.text
    r = launch(hub, BOB, kind="kernel", id="filek", image=hub.test_image, command=["true"],
               mounts=[{"source": bob.pw_dir, "target": "/run/ptcuda"}], files=[{"path": "/run/ptcuda/k.json", "data": b64}])
    assert r.status_code == 400 and "mount target" in r.json()["message"], r.text
    r = launch(hub, BOB, kind="job", id="filej", image=hub.test_image, command=["true"],
               files=[{"path": "/run/ptcuda/k.json", "data": b64}])
    assert r.status_code == 403 and "only a kernel" in r.json()["message"], r.text
    st = os.stat(bob.pw_dir)
    assert st.st_uid == bob.pw_uid and st.st_mode & 0o777 == 0o700


def test_gpus_are_the_broker_s_to_assign_whatever_the_client_sends(hub, engine):
    r = launch(hub, ALICE, kind="job", id="gpu-a", image=hub.test_image, command=["sleep", "600"], gpus="count:1")
    assert r.status_code == 200, r.text
    held = r.json()["result"]["spec"]["gpus"]["ids"]
    assert len(held) == 1
    try:
        spellings = [["all"], ["0,1"], ["0", "GPU-0"], ["7"], ["GPU-00000000-not-a-gpu"], "count:-1", "count:3", "-1",
                     "bogus", {"mode": "ids", "ids": ["all"]}]
        for gpus in spellings:
            spec_gpus = gpus if isinstance(gpus, dict) else {"mode": "ids", "ids": gpus if isinstance(gpus, list) else [gpus]}
            r = launch(hub, BOB, kind="job", id="gpu-b", image=hub.test_image, command=["sleep", "600"], gpus=gpus,
                       spec={"image": hub.test_image, "command": ["sleep", "600"], "gpus": spec_gpus,
                             "labels": {"io.jupyter-ptcuda.kind": "job", "io.jupyter-ptcuda.job-id": "gpu-b"}})
            assert r.status_code in (400, 403, 409), (gpus, r.status_code, r.text)
        # a made-up GPU mode, no claim, an image that says NVIDIA_VISIBLE_DEVICES=all (as pytorch/pytorch does)
        for spec_gpus in ({"mode": "bogus"}, {"mode": "count", "count": -1}):
            r = launch(hub, BOB, kind="job", id="gpu-c", image=hub.nvidia_all_image, command=["sleep", "600"], gpus="none",
                       spec={"image": hub.nvidia_all_image, "command": ["sleep", "600"], "gpus": spec_gpus,
                             "labels": {"io.jupyter-ptcuda.kind": "job", "io.jupyter-ptcuda.job-id": "gpu-c"}})
            assert r.status_code == 200, r.text
            info = inspect(engine, r.json()["result"]["id"])
            call(hub, BOB, "remove", cid=info["Id"])
            assert env_of(info)["NVIDIA_VISIBLE_DEVICES"] == "void" and not info["HostConfig"]["DeviceRequests"]
        # 'all' is every GPU nobody holds: never alice's
        r = launch(hub, BOB, kind="job", id="gpu-d", image=hub.test_image, command=["sleep", "600"], gpus="all",
                   spec={"image": hub.test_image, "command": ["sleep", "600"], "gpus": {"mode": "all"},
                         "labels": {"io.jupyter-ptcuda.kind": "job", "io.jupyter-ptcuda.job-id": "gpu-d"}})
        assert r.status_code == 200, r.text
        info = inspect(engine, r.json()["result"]["id"])
        [req] = info["HostConfig"]["DeviceRequests"]
        assert req["Count"] == 0 and held[0] not in req["DeviceIDs"] and req["DeviceIDs"]
        assert env_of(info)["NVIDIA_VISIBLE_DEVICES"] == ",".join(req["DeviceIDs"])
    finally:
        remove_all(hub, ALICE)
        remove_all(hub, BOB)
    # a claim lives as long as its container: bob's GPUs are free again once his container is removed
    r = launch(hub, BOB, kind="job", id="gpu-e", image=hub.test_image, command=["sleep", "600"], gpus="count:2")
    assert r.status_code == 200, r.text
    call(hub, BOB, "remove", cid=r.json()["result"]["id"])
    r = launch(hub, ALICE, kind="job", id="gpu-f", image=hub.test_image, command=["sleep", "600"], gpus="count:2")
    assert r.status_code == 200, r.text
    call(hub, ALICE, "remove", cid=r.json()["result"]["id"])


def test_every_limit_has_a_ceiling_and_unlimited_is_refused(hub, engine):
    base = {"kind": "job", "id": "lim", "image": hub.test_image, "command": ["sleep", "600"]}
    spec = {"image": hub.test_image, "command": ["sleep", "600"], "labels": {"io.jupyter-ptcuda.kind": "job",
                                                                            "io.jupyter-ptcuda.job-id": "lim"}}
    try:
        for field, value in [("mem_limit", 0), ("mem_limit", -1), ("mem_limit", 1), ("pids_limit", 0), ("pids_limit", -1),
                             ("pids_limit", 1), ("cpus", -1), ("cpus", 0), ("shm_size", 0), ("mem_limit", 2**40),
                             ("pids_limit", 10**6)]:
            r = launch(hub, BOB, **{**base, field: value}, spec={**spec, field: value})
            assert 400 <= r.status_code < 500, (field, value, r.status_code, r.text)
        r = launch(hub, BOB, **base)  # nothing asked: the operator's ceilings, not "unlimited"
        assert r.status_code == 200, r.text
        host = inspect(engine, r.json()["result"]["id"])["HostConfig"]
        assert host["Memory"] == 1024**3 and host["PidsLimit"] == LIMITS["max_pids"] and host["NanoCpus"] > 0
    finally:
        remove_all(hub, BOB)


def test_one_user_s_long_calls_and_terminals_do_not_delay_another_user(hub):
    a = launch(hub, ALICE, kind="job", id="victim", image=hub.test_image, command=["sleep", "900"])
    b = launch(hub, BOB, kind="job", id="hog", image=hub.test_image, command=["sleep", "900"])
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    mine, hog = a.json()["result"]["id"], b.json()["result"]["id"]
    statuses: list[int] = []
    token = hub.token(BOB, scopes=["access:services!service=ptcuda-broker"])

    def wait_on_hog():
        try:
            statuses.append(call(hub, BOB, "wait", token=token, cid=hog, timeout=40).status_code)
        except requests.RequestException:
            statuses.append(0)

    waiters = [threading.Thread(target=wait_on_hog, daemon=True) for _ in range(12)]
    try:
        for t in waiters:
            t.start()
        deadline = time.monotonic() + 20
        while statuses.count(429) < 12 - LIMITS["max_long_calls"] and time.monotonic() < deadline:
            time.sleep(0.1)  # until every wait past bob's limit has been answered (the rest hold the broker)
        started = time.monotonic()
        r = call(hub, ALICE, "exec", cid=mine, cmd=["true"], timeout=60)
        took = time.monotonic() - started
        assert r.status_code == 200 and took < 5, (r.status_code, took)
        assert statuses.count(429) == 12 - LIMITS["max_long_calls"], statuses
        # terminals: counted before the upgrade, so many at once cannot all pass the check
        opened = asyncio.run(_open_terminals(hub, token, hog, 10))
        assert opened <= LIMITS["max_terminals"], opened
    finally:
        call(hub, BOB, "remove", cid=hog)
        call(hub, ALICE, "remove", cid=mine)
        for t in waiters:
            t.join(timeout=30)


async def _open_terminals(hub, token: str, cid: str, n: int) -> int:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def one():
        req = HTTPRequest(f"{hub.broker_url.replace('http', 'ws')}/v1/tty?cid={cid}",
                          headers={"Authorization": f"token {token}"}, request_timeout=30)
        try:
            return await websocket_connect(req)
        except Exception:  # noqa: BLE001 - refused (429)
            return None

    conns = await asyncio.gather(*(one() for _ in range(n)))
    opened = [c for c in conns if c is not None]
    for c in opened:
        c.close()
    return len(opened)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_local_process_without_a_token_cannot_make_the_broker_buffer_a_large_body(hub):
    pid = hub.service("ptcuda-broker")["pid"]
    before = _rss_kib(pid)
    body = b"x" * (48 * 1024**2)
    for _ in range(2):
        try:
            r = requests.post(f"{hub.broker_url}/v1/list", data=body, timeout=60)
            assert r.status_code in (403, 413), r.status_code
        except requests.ConnectionError:
            pass  # refused while it was still sending
    grown = _rss_kib(pid) - before
    assert grown < 16 * 1024, f"the broker grew {grown} KiB for unauthenticated bodies"
    deep = b"[" * 200_000 + b"]" * 200_000
    r = requests.post(f"{hub.broker_url}/v1/list", data=deep, timeout=30,
                      headers={"Authorization": f"token {hub.token(BOB, scopes=['access:services!service=ptcuda-broker'])}"})
    assert r.status_code in (400, 413), r.status_code


def test_malformed_values_are_a_short_4xx_on_every_operation(hub):
    r = launch(hub, BOB, kind="job", id="mal", image=hub.test_image, command=["sleep", "600"])
    assert r.status_code == 200, r.text
    cid = r.json()["result"]["id"]
    cases = [
        ("notices", {"since": "yesterday"}), ("notices", {"since": float("inf")}), ("gpus", {"since": "x"}),
        ("gpus", {"max_points": -5}), ("exec", {"cid": cid, "cmd": ["true"], "stdin": "%%% not base64"}),
        ("exec", {"cid": cid, "cmd": "id"}), ("exec", {"cid": cid, "cmd": [1, 2]}), ("exec", {"cid": cid, "cmd": ["true"],
                                                                                         "env": {"A B": "x"}}),
        ("exec", {"cid": cid, "cmd": ["true"], "workdir": "relative"}), ("signal", {"cid": cid, "signal": "SIGFOO"}),
        ("signal", {"cid": cid, "signal": 999}), ("signal", {"cid": cid, "signal": ["SIGINT"]}), ("logs", {"cid": cid, "tail": "x"}),
        ("logs", {"cid": {"$ne": 1}}), ("inspect", {"cid": "../../etc"}), ("list", {"kind": "nope"}),
        ("list", {"running": "yes"}), ("image", {"ref": {}}), ("pull", {"ref": ["a"]}), ("private_dir", {"kernel_id": "../x"}),
        ("private_dir", {"kernel_id": 5}), ("launch", {"request": {"kind": "job", "image": {}, "command": []}}),
        ("launch", {"request": {"kind": "job", "image": hub.test_image, "cpus": float("nan")}}),
        ("launch", {"request": {"kind": "job", "image": hub.test_image, "mounts": [{"source": "/home", "target": "rel"}]}}),
        ("launch", {"request": {"kind": "job", "image": hub.test_image, "env": {"X": 1}}}),
        ("launch", {"request": {"kind": "job", "image": hub.test_image, "command": "sleep 1"}}),
        ("launch", {"request": "job"}), ("launch", {"request": {"kind": "job", "image": hub.test_image}, "gpu_fallback": "gpu"}),
        ("run_once", {"request": {"kind": "job", "image": hub.test_image}, "timeout_s": "soon"}),
        ("wait", {"cid": 12}),
    ]
    try:
        for op, body in cases:
            raw = json.dumps(body, allow_nan=True)
            resp = requests.post(f"{hub.broker_url}/v1/{op}", data=raw, timeout=30, headers={
                "Authorization": f"token {hub.token(BOB, scopes=['access:services!service=ptcuda-broker'])}"})
            assert 400 <= resp.status_code < 500, (op, body, resp.status_code, resp.text[:300])
            assert "Traceback" not in resp.text
    finally:
        call(hub, BOB, "remove", cid=cid)


def test_a_user_reads_only_the_images_the_policy_allows(hub, engine):
    outside = "ptcuda-outside-policy:probe"  # an image on the engine that no pattern of c.PtcudaBroker.images allows
    engine.run_sync(lambda api: api.tag(hub.test_image, *outside.split(":")))
    try:
        r = call(hub, BOB, "image", ref=outside)
        assert r.status_code == 403 and "is not allowed" in r.json()["message"], r.text
        assert "result" not in r.json()
        r = call(hub, BOB, "image", ref=hub.test_image)
        assert r.status_code == 200 and r.json()["result"]["labels"], r.text
    finally:
        engine.run_sync(lambda api: api.remove_image(outside))


def test_kernel_folders_are_capped_and_reused(hub):
    cap = LIMITS["max_private_dirs"]
    base = Path("/run/jupyter-ptcuda-broker") / str(hub.account(BOB).pw_uid)
    codes = [call(hub, BOB, "private_dir", kernel_id=f"flood{i:03d}").status_code for i in range(5 * cap)]
    assert set(codes) == {200}, codes  # folders of kernels that never started are swept, not piled up
    assert len(os.listdir(base)) <= cap and f"flood{5 * cap - 1:03d}" in os.listdir(base)
    again = call(hub, BOB, "private_dir", kernel_id=f"flood{5 * cap - 1:03d}").json()["result"]
    assert again == str(base / f"flood{5 * cap - 1:03d}") and len(os.listdir(base)) <= cap  # the same kernel: its folder
    try:  # folders of kernels that do have a container are kept: past the cap, a 429 with what to do
        for i in range(cap):
            call(hub, BOB, "private_dir", kernel_id=f"live{i}")
            r = launch(hub, BOB, kind="kernel", id=f"live{i}", image=hub.test_image, command=["true"])
            assert r.status_code == 200, r.text
        r = call(hub, BOB, "private_dir", kernel_id="one-more")
        assert r.status_code == 429 and "max_private_dirs" in r.json()["message"], r.text
        assert len(os.listdir(base)) == cap
    finally:
        remove_all(hub, BOB)


def test_another_user_cannot_pre_empt_a_user_s_private_folder(hub):
    alice = hub.account(ALICE)
    squat = f"/tmp/jupyter-ptcuda-{alice.pw_uid}"  # where a server without XDG_RUNTIME_DIR used to keep it
    hub.run_as(BOB, ["sh", "-c", f"mkdir -p {squat} && chmod 0777 {squat}"])
    try:
        hub.start_server(ALICE)
        r = hub.user_api(ALICE, "POST", "api/kernels", name=KERNEL, timeout=120)
        assert r.status_code == 201, r.text
        hub.user_api(ALICE, "DELETE", f"api/kernels/{r.json()['id']}")
    finally:
        subprocess.run(["rm", "-rf", squat])
        hub.stop_server(ALICE)


def test_a_revoked_token_is_refused_within_seconds(hub):
    made = hub.hub_api("POST", f"users/{BOB}/tokens", scopes=["access:services!service=ptcuda-broker"],
                       note="revoked-test").json()
    assert call(hub, BOB, "whoami", token=made["token"]).status_code == 200
    assert hub.hub_api("DELETE", f"users/{BOB}/tokens/{made['id']}").status_code == 204
    revoked = time.monotonic()
    while call(hub, BOB, "whoami", token=made["token"]).status_code == 200:
        assert time.monotonic() - revoked < 10, "a revoked token still works after 10 s"
        time.sleep(0.25)
