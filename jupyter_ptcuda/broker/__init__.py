"""The JupyterHub broker: a Hub service that alone holds the Docker socket and serves the container
service to the users' single-user servers (:mod:`.app` the service, :mod:`.ops` what it does for a user,
:mod:`.users` who a user is on the host and what they may mount)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """``jupyter ptcuda broker [--config FILE] [--url URL]`` (called by ``jupyter_ptcuda.cli``)."""
    b = sub.add_parser("broker", help="run the JupyterHub broker service (as root, beside the Hub)",
                       description="The JupyterHub service that alone talks to the Docker engine for the users' "
                                   "servers. Run it from c.JupyterHub.services (see examples/jupyterhub_config.py).")
    b.add_argument("--config", help="a Python config file setting c.PtcudaBroker.*")
    b.add_argument("--url", help="where to listen (default $JUPYTERHUB_SERVICE_URL)")
    b.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .app import main

    argv = []
    if args.config:
        argv.append(f"--config={args.config}")
    if args.url:
        argv.append(f"--url={args.url}")
    return main(argv)
