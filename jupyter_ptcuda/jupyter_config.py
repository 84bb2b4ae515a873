"""The Jupyter config files a server started here would read, for commands that run without a server.

``jupyter ptcuda run`` and ``jupyter ptcuda jobs`` must shape containers and find the job store exactly
as the server does, so an operator's ``c.ContainerOptions`` / ``c.JobOptions`` / ``c.JobManager``
settings (mounts, memory limits, environment allowlist, ``db_path``...) apply to jobs submitted from a
terminal or CI too. Files: ``jupyter_config`` then ``jupyter_server_config`` (``.py`` then ``.json``) in
every directory of :func:`jupyter_core.paths.jupyter_config_path`, lowest priority first, as
``JupyterApp`` loads them; ``$JUPYTER_CONFIG_DIR`` comes first in that path.
"""

from __future__ import annotations

from collections.abc import Sequence

from jupyter_core.paths import jupyter_config_path
from traitlets.config import Config
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .errors import ConfigError

BASENAMES = ("jupyter_config", "jupyter_server_config")


def load_server_config(paths: Sequence[str] | None = None) -> Config:
    """The merged config; a file that fails to load is a ConfigError naming it."""
    config = Config()
    dirs = list(paths) if paths is not None else jupyter_config_path()
    for base in BASENAMES:
        for directory in reversed(dirs):  # descending priority: load backwards, later files win
            for loader in (PyFileConfigLoader(base + ".py", path=directory),
                           JSONFileConfigLoader(base + ".json", path=directory)):
                try:
                    config.merge(loader.load_config())
                except ConfigFileNotFound:
                    continue
                except Exception as exc:  # noqa: BLE001 - a user's file: say which one, and why
                    name = loader.full_filename or f"{directory}/{loader.filename}"
                    raise ConfigError(f"cannot load the Jupyter config file {name}: {type(exc).__name__}: {exc}. "
                                      "Fix it (the server would fail on it too) or move it away.") from None
    return config
