"""Attack: malformed input (issue 9, the request part).

Each bad input is a 4xx with a short JSON message that says what to send instead; the reply and the
server's log stay small (a 20 MB path is copied nowhere), and the server answers afterwards. A health
check of a kernel does not run the user's files: a ``json.py`` in the notebook folder cannot shadow the
standard library of the check.

Through a real Jupyter server (auth on) on the real engine with the CPU test image, as root (CI).
"""

from __future__ import annotations

import json
import logging

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json
from tests.security.conftest import server_job_root
from tests.server.conftest import api  # noqa: F401 - the REST client fixture (validates against openapi.yaml)
from tests.server.helpers import wait_for

pytestmark = pytest.mark.integration
MESSAGE_MAX = 400
MB = 1024 * 1024


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True}},
            "PtcudaExtension": {"nvml": "fake:2:model=H100+L4", "sample_interval": 0.2, "freeze_gc": False, "health_timeout": 120.0},
            "JobManager": {"poll_interval": 0.5}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir, engine, test_image):
    """A private job store, the test image as the jobs' image, nb/ owned by the job uid; job containers of
    this root removed afterwards."""
    yield from server_job_root(jp_root_dir, tmp_path, monkeypatch, {"hello.py": "print('hello from the job')\n"})


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(logging.Formatter().format(record))  # message + traceback, as a log file has them


@pytest.fixture
def server_log(jp_serverapp):
    """Everything the server logs (its own log, tornado's, the root logger) while the test runs."""
    handler = Collect()
    loggers = {jp_serverapp.log, logging.getLogger(), logging.getLogger("tornado.access"),
               logging.getLogger("tornado.application"), logging.getLogger("tornado.general")}
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.records
    for lg in loggers:
        lg.removeHandler(handler)


async def bad(api, method, path, body=None, *, status=400, words=(), **kw):  # noqa: F811 - api: the fixture's callable
    """The request is refused with ``status`` and a short JSON message containing ``words``."""
    code, reply, resp = await api(method, path, body, **kw)
    assert code == status, (path, code, str(reply)[:500])
    assert isinstance(reply, dict) and isinstance(reply.get("message"), str), str(reply)[:500]
    assert len(reply["message"]) <= MESSAGE_MAX and len(resp.body) < 2000, len(resp.body)
    for w in words:
        assert w in reply["message"], (w, reply["message"])
    return reply["message"]


async def still_answers(api):  # noqa: F811
    code, jobs, _ = await api("GET", "jobs")
    assert code == 200 and isinstance(jobs, list)


async def test_deep_and_odd_json_is_400(api, server_log):  # noqa: F811
    await bad(api, "POST", "jobs", "[" * 100_000, words=["nests too deeply"])
    await bad(api, "POST", "jobs", '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}", words=["nests too deeply"])
    await bad(api, "POST", "health", "[" * 100_000, words=["nests too deeply"])
    await bad(api, "POST", "exports", json.dumps({"path": "nb/x.ipynb", "lenient": json.loads("[" * 40 + "]" * 40)}),
              words=["deeper than 32"])
    await bad(api, "POST", "jobs", '{"path": "nb/hello.py", "timeout": NaN}', words=["NaN is not a JSON number"])
    await bad(api, "POST", "jobs", b'{"path": "\xff"}', words=["not valid JSON"])
    assert not [r for r in server_log if "Traceback" in r or "RecursionError" in r], server_log[-3:]
    await still_answers(api)


async def test_huge_bodies_and_paths_are_refused_and_not_logged(api, server_log):  # noqa: F811
    huge = "a" * (20 * MB)
    await bad(api, "POST", "jobs", {"path": huge}, status=413, words=["at most 1048576 (1 MiB)"])
    await bad(api, "POST", "exports", {"path": huge}, status=413)
    long_path = "nb/" + "b" * 900_000 + ".py"  # under the body limit: the path itself is refused
    message = await bad(api, "POST", "jobs", {"path": long_path, "gpus": "none"}, status=400)
    assert "b" * 1000 not in message
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "c" * 500_000: 1}, words=["unknown field"])
    await bad(api, "GET", "jobs/" + "d" * 30_000, status=404)  # (the access log has the URL: a server setting)
    logged = "\n".join(server_log)
    assert "a" * 1000 not in logged and "b" * 1000 not in logged and "c" * 1000 not in logged
    logged = logged.replace("d" * 30_000, "")
    assert len(logged) < 20_000, len(logged)
    await still_answers(api)


async def test_request_fields_are_bounded(api, jp_root_dir):  # noqa: F811
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "args": ["--x", "a\u0000b"]},
              words=["args[1] contains a NUL byte"])
    await bad(api, "POST", "jobs", {"path": "nb/hello\u0000.py", "gpus": "none"}, words=["path contains a NUL byte"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "params": {"lr": "1\u0000"}},
              words=["NUL byte"])
    await bad(api, "POST", "health", {"image": "x\u0000y"}, words=["NUL byte"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "nproc_per_node": 10**20},
              words=["from 1 to 1024"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "name": "n" * (MB // 2)},
              words=["at most 200 characters"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "args": ["x"] * 5000},
              words=["at most 1024"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": 10**20}, words=["more than any machine has"])
    await bad(api, "POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "mem_limit": 10**30},
              words=["larger than any machine"])
    status, jobs, _ = await api("GET", "jobs")
    assert status == 200 and jobs == []  # none of them was started
    assert not (jp_root_dir / "nb" / "outputs").exists() or not any((jp_root_dir / "nb" / "outputs").iterdir())


async def test_log_offsets_out_of_range_are_400(api, server_log):  # noqa: F811
    status, job, _ = await api("POST", "jobs", {"path": "nb/hello.py", "gpus": "none"})
    assert status == 201, job
    await wait_for(api, f"jobs/{job['id']}", lambda s, b: s == 200 and b["state"] not in ("queued", "running"),
                   timeout=90)
    for offset in (str(2**55), str(2**63), "9" * 40, "-1", "1e3"):
        await bad(api, "GET", f"jobs/{job['id']}/log", params={"offset": offset}, words=["offset must be"])
    status, text, _ = await api("GET", f"jobs/{job['id']}/log", params={"offset": str(2**40)})
    assert status == 200 and text == ""  # the largest offset accepted: past the end, nothing
    status, text, _ = await api("GET", f"jobs/{job['id']}/log")
    assert status == 200 and "hello from the job" in text
    assert not [r for r in server_log if "Traceback" in r], server_log[-3:]


@pytest.fixture
def plain_kernelspec(jp_data_dir, test_image):
    d = jp_data_dir / "kernels" / "ptcuda-plain"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (CPU)", {"image": test_image, "gpus": "none"})))
    return "ptcuda-plain"


@pytest.mark.parametrize("module, code", [
    ("json", "raise SystemExit('the notebook folder json.py was imported by the health check')\n"),
    ("json", "import time\ntime.sleep(3600)\n"),
])
async def test_health_check_of_a_kernel_ignores_the_users_files(api, jp_fetch, jp_serverapp, jp_root_dir,  # noqa: F811
                                                                 plain_kernelspec, module, code):
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": plain_kernelspec, "path": "nb"}),
                       request_timeout=120)
    kid = json.loads(r.body)["id"]
    try:
        # the kernel is up (it imported json itself); now the user's folder shadows the standard library
        (jp_root_dir / "nb" / f"{module}.py").write_text(code)
        (jp_root_dir / "nb" / "sitecustomize.py").write_text(code)
        status, entry, _ = await api("POST", "health", {"kernel_id": kid})
        assert status == 201, entry
        done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=100)
        assert done["state"] == "done", done
        checks = {c["id"]: c for c in done["report"]["checks"]}
        assert checks["torch_import"]["status"] == "pass" and done["report"]["target"]["kernel_id"] == kid
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)
