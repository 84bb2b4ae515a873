"""The CLI reads the Jupyter config files a server would: same files, same priority."""

from __future__ import annotations

import json

import pytest

from jupyter_ptcuda.errors import ConfigError
from jupyter_ptcuda.jupyter_config import load_server_config


def test_higher_priority_directories_win_and_both_file_kinds_load(tmp_path):
    user, system = tmp_path / "user", tmp_path / "system"
    user.mkdir()
    system.mkdir()
    (system / "jupyter_server_config.py").write_text('c.ContainerOptions.mem_limit = "2g"\nc.JobManager.cancel_grace = 5.0\n')
    (user / "jupyter_server_config.json").write_text(json.dumps({"ContainerOptions": {"mem_limit": "3g"}}))
    (user / "jupyter_config.py").write_text('c.JobOptions.shm_size = "1g"\n')
    config = load_server_config([str(user), str(system)])  # jupyter_config_path() order: highest first
    assert config.ContainerOptions.mem_limit == "3g"
    assert config.JobManager.cancel_grace == 5.0
    assert config.JobOptions.shm_size == "1g"


def test_no_files_is_an_empty_config(tmp_path):
    assert load_server_config([str(tmp_path)]) == {}


@pytest.mark.parametrize("name, text", [("jupyter_server_config.py", "c.JobOptions.mem_limit = \n"),
                                        ("jupyter_server_config.json", "{not json")])
def test_a_broken_file_is_named(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=name):
        load_server_config([str(tmp_path)])
