"""A root server gives what JupyterLab creates in a kernel's folder to the kernel's user, never through a
link: upload ``data.csv`` through the real contents API, then append to it from a real kernel container
(the quickstart's layout: a root server, the notebook folder given to uid 65533)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="the rule is for a server running as root")]
UID = GID = 65533  # what scripts/notebook-folder gives the folder when there is no sudo user


@pytest.fixture
def folder(jp_root_dir):
    os.chown(jp_root_dir, UID, GID)
    return jp_root_dir


async def put(jp_fetch, path: str, model: dict) -> tuple[int, dict]:
    r = await jp_fetch("api", "contents", *path.split("/"), method="PUT", body=json.dumps(model), raise_error=False)
    return r.code, json.loads(r.body or b"{}")


def owner(p) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid


async def test_uploaded_file_is_the_kernels_and_it_can_append(jp_fetch, jp_serverapp, jp_data_dir, folder, test_image):
    code, _ = await put(jp_fetch, "data.csv", {"type": "file", "format": "text", "content": "a,b\n1,2\n"})
    assert code == 201
    assert owner(folder / "data.csv") == (UID, GID)

    d = jp_data_dir / "kernels" / "ptcuda-own"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (CPU)", {"image": test_image, "gpus": "none"})))
    r = await jp_fetch("api", "sessions", method="POST", request_timeout=120, body=json.dumps(
        {"path": "n.ipynb", "type": "notebook", "name": "n.ipynb", "kernel": {"name": "ptcuda-own"}}))
    kid = json.loads(r.body)["kernel"]["id"]
    km = jp_serverapp.kernel_manager
    kc = km.get_kernel(kid).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

        reply = await kc.execute_interactive(
            "import os\nwith open('data.csv', 'a') as f: f.write('3,4\\n')\nprint('uid', os.getuid())",
            timeout=60, output_hook=hook)
        assert reply["content"]["status"] == "ok", out  # was: PermissionError: [Errno 13] … 'data.csv'
        assert "".join(out).split() == ["uid", str(UID)]
        assert (folder / "data.csv").read_text() == "a,b\n1,2\n3,4\n"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(kid, now=True)
        from jupyter_ptcuda.provisioner import drain_removals

        await drain_removals()


async def test_new_files_folders_copies_and_moves_are_the_kernels(jp_fetch, folder):
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"type": "file", "ext": ".txt"}))
    assert owner(folder / json.loads(r.body)["path"]) == (UID, GID)
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"type": "directory"}))
    new_dir = json.loads(r.body)["path"]
    assert owner(folder / new_dir) == (UID, GID)
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"type": "notebook"}))
    assert owner(folder / json.loads(r.body)["path"]) == (UID, GID)
    # a binary upload inside the new folder
    code, _ = await put(jp_fetch, f"{new_dir}/w.bin", {"type": "file", "format": "base64",
                                                        "content": base64.b64encode(b"\x00\x01").decode()})
    assert code == 201 and owner(folder / new_dir / "w.bin") == (UID, GID)
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"copy_from": f"{new_dir}/w.bin"}))
    assert owner(folder / json.loads(r.body)["path"]) == (UID, GID)

    # root's own folder stays root's; a file moved out of it into the kernel's folder becomes the kernel's
    (folder / "rootarea").mkdir()
    os.chown(folder / "rootarea", 0, 0)
    code, _ = await put(jp_fetch, "rootarea/r.txt", {"type": "file", "format": "text", "content": "r"})
    assert code == 201 and owner(folder / "rootarea" / "r.txt") == (0, 0)
    await jp_fetch("api", "contents", "rootarea", "r.txt", method="PATCH", body=json.dumps({"path": "moved.txt"}))
    deadline = time.monotonic() + 10  # the rename event's listener runs just after the reply
    while owner(folder / "moved.txt") != (UID, GID) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert owner(folder / "moved.txt") == (UID, GID)


async def test_a_planted_link_is_neither_written_through_nor_handed_over(jp_fetch, jp_serverapp, folder, tmp_path):
    victim = tmp_path / "victim"  # root's file outside the root, e.g. /etc/shadow
    victim.write_text("secret\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(victim, folder / "data.csv")  # what a kernel running as 65533 can plant in its folder
    os.lchown(folder / "data.csv", UID, GID)
    os.symlink(outside, folder / "sub")
    os.lchown(folder / "sub", UID, GID)

    code, err = await put(jp_fetch, "data.csv", {"type": "file", "format": "text", "content": "pwned\n"})
    assert code == 400 and "data.csv is a symbolic link" in err["message"] and "Delete the link" in err["message"]
    code, err = await put(jp_fetch, "sub/x.csv", {"type": "file", "format": "text", "content": "pwned\n"})
    assert code == 400 and "sub is a symbolic link" in err["message"]
    assert victim.read_text() == "secret\n" and owner(victim) == (0, 0)
    assert list(outside.iterdir()) == [] and owner(outside) == (0, 0)

    # the rule itself, asked to settle the link (a link swapped in after the save): the target is untouched
    rule = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].app.ownership
    assert rule.settle(str(folder / "data.csv")) == 0
    assert rule.settle("sub/anything", recursive=True) == 0
    assert owner(victim) == (0, 0) and owner(outside) == (0, 0)
    # a hard link to root's file is not handed over either
    os.link(victim, folder / "hard.csv")
    assert rule.settle("hard.csv") == 0 and owner(victim) == (0, 0)


async def test_no_write_of_a_save_an_upload_a_checkpoint_or_a_copy_goes_through_a_planted_link(
        jp_fetch, jp_serverapp, folder, tmp_path):
    """Every name jupyter_server writes besides the file itself: the save's backup ``.~NAME``, the checkpoint
    folder, an upload's later chunks, a copy's source, a folder copy's inside, a rename's target folder."""
    victim = tmp_path / "victim"  # root's file outside the root (/etc/profile.d/x.sh)
    victim.write_text("secret\n")
    outside = tmp_path / "outside"
    outside.mkdir()

    def plant(name: str, target) -> None:  # what the kernel (uid 65533) can do in its folder
        os.symlink(target, folder / name)
        os.lchown(folder / name, UID, GID)

    code, _ = await put(jp_fetch, "data.csv", {"type": "file", "format": "text", "content": "a,b\n"})
    assert code == 201
    plant(".~data.csv", victim)  # was: the backup copy of data.csv written over the victim
    code, _ = await put(jp_fetch, "data.csv", {"type": "file", "format": "text", "content": "a,b\n1,2\n"})
    assert code == 200
    assert (folder / "data.csv").read_text() == "a,b\n1,2\n" and owner(folder / "data.csv") == (UID, GID)
    assert victim.read_text() == "secret\n"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".~")) == [".~data.csv"]  # no backup left

    plant(".ipynb_checkpoints", outside)  # was: data-checkpoint.csv written into the victim's folder
    r = await jp_fetch("api", "contents", "data.csv", "checkpoints", method="POST", body=b"", raise_error=False)
    assert r.code == 400 and ".ipynb_checkpoints is a symbolic link" in json.loads(r.body)["message"]
    assert list(outside.iterdir()) == []
    os.unlink(folder / ".ipynb_checkpoints")
    r = await jp_fetch("api", "contents", "data.csv", "checkpoints", method="POST", body=b"")
    assert r.code == 201 and (folder / ".ipynb_checkpoints" / "data-checkpoint.csv").read_text() == "a,b\n1,2\n"

    # an upload in chunks: the link swapped in after the first chunk gets no second one
    code, _ = await put(jp_fetch, "big.bin", {"type": "file", "format": "base64", "chunk": 1,
                                              "content": base64.b64encode(b"one").decode()})
    assert code == 201
    os.unlink(folder / "big.bin")
    plant("big.bin", victim)
    code, err = await put(jp_fetch, "big.bin", {"type": "file", "format": "base64", "chunk": -1,
                                                "content": base64.b64encode(b"two").decode()})
    assert code == 400 and "big.bin is a symbolic link" in err["message"]
    assert victim.read_text() == "secret\n"

    # a copy of a planted link would hand the victim's content to the kernel
    plant("innocent.csv", victim)
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"copy_from": "innocent.csv"}),
                       raise_error=False)
    assert r.code == 400 and "innocent.csv is a symbolic link" in json.loads(r.body)["message"]
    (folder / "d").mkdir()
    os.chown(folder / "d", UID, GID)
    os.symlink(victim, folder / "d" / "inside.csv")
    r = await jp_fetch("api", "contents", method="POST", body=json.dumps({"copy_from": "d"}))
    copied = folder / json.loads(r.body)["path"]
    assert (copied / "inside.csv").is_symlink()  # copied as a link, not as the victim's content

    # a rename into a folder that is a link moves nothing out of the root
    plant("into", outside)
    r = await jp_fetch("api", "contents", "data.csv", method="PATCH", body=json.dumps({"path": "into/x.sh"}),
                       raise_error=False)
    assert r.code == 400 and "into is a symbolic link" in json.loads(r.body)["message"]
    assert list(outside.iterdir()) == [] and (folder / "data.csv").exists()
    assert victim.read_text() == "secret\n" and owner(victim) == (0, 0)
