"""The Hub harness itself: real servers as real users, isolation between them, no Docker for users."""

from __future__ import annotations

import pytest

ALICE, BOB = "ptcuda-alice", "ptcuda-bob"


@pytest.fixture(scope="module")
def servers(hub):
    for u in (ALICE, BOB):
        hub.start_server(u)
    yield
    for u in (ALICE, BOB):
        hub.stop_server(u)


def test_servers_and_kernels_run_as_their_user(hub, servers):
    for u in (ALICE, BOB):
        pw = hub.account(u)
        resp = hub.user_api(u, "PUT", "api/contents/made-by-server.txt", type="file", format="text",
                            content=f"hello {u}")
        assert resp.status_code in (200, 201), resp.text
        import os

        st = os.stat(f"{pw.pw_dir}/made-by-server.txt")
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
        out = hub.kernel_run(u, "import os; print(os.getuid(), os.getgid(), os.getcwd())")
        assert out.split() == [str(pw.pw_uid), str(pw.pw_gid), pw.pw_dir]


def test_a_user_cannot_use_another_users_server(hub, servers):
    assert hub.user_api(ALICE, "GET", "api/contents").status_code == 200
    resp = hub.user_api(BOB, "GET", "api/contents", server=ALICE)
    assert resp.status_code == 403, resp.text


def test_users_cannot_reach_the_docker_socket(hub):
    r = hub.run_as(ALICE, ["python", "-c",
                           'import socket; s=socket.socket(socket.AF_UNIX); s.connect("/var/run/docker.sock")'])
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
    assert "docker" not in hub.run_as(ALICE, ["id", "-nG"]).stdout.split()


def test_the_ptcuda_server_extension_answers_in_the_users_server(hub, servers):
    resp = hub.user_api(ALICE, "GET", "jupyter-ptcuda/gpus")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    # and it is authenticated: bob's token is refused on alice's server
    assert hub.user_api(BOB, "GET", "jupyter-ptcuda/gpus", server=ALICE).status_code == 403
