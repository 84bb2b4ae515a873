# A minimal JupyterHub config for jupyter-ptcuda: the broker as a Hub-managed service, the role that lets
# the users' servers call it, and the spawner environment that points them at it. Nobody but the broker
# (run by the Hub, as root) talks to the Docker engine; the users' servers (LocalProcessSpawner: each user
# as their own Unix account) are not in group docker. tests/hub/test_broker.py starts a Hub with this file.
#
#   pip install jupyterhub "jupyter-ptcuda[lab]"        # as root, into the Hub's environment
#   jupyter ptcuda kernelspec install --sys-prefix --image jupyter-ptcuda/pytorch-kernel:latest --gpus 1
#   jupyterhub -f jupyterhub_config.py
c = get_config()  # noqa: F821

BROKER = "ptcuda-broker"
BROKER_URL = "http://127.0.0.1:10101"  # loopback: every call carries the user's Hub token

c.JupyterHub.services.append({
    "name": BROKER,
    "url": BROKER_URL,  # the Hub passes it as $JUPYTERHUB_SERVICE_URL: where the broker listens
    # the broker reads its policy (c.PtcudaBroker.* below) from this same file
    "command": ["jupyter-ptcuda", "broker", "--config", __file__],
    "display": False,
})
# every user may call the broker (the default 'user' role plus one scope), and their servers' tokens get it
c.JupyterHub.load_roles.append({"name": "user", "scopes": ["self", f"access:services!service={BROKER}"]})
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", f"access:services!service={BROKER}"]
c.Spawner.environment.update({"JUPYTER_PTCUDA_BROKER_URL": BROKER_URL})

# The broker's policy:
c.PtcudaBroker.images = ["jupyter-ptcuda/*"]  # fnmatch patterns users may run
c.PtcudaBroker.mount_roots = ["{home}"]  # per user: {username}, {uid}, {home}
c.PtcudaBroker.max_gpus = 2  # GPUs one user may hold at once
c.PtcudaBroker.max_kernels = 4  # kernels one user may run at once
# c.PtcudaBroker.idle_gpu_timeout = 3600  # shut down kernels that hold GPUs unused for an hour (the user is told)
# c.PtcudaBroker.queue_db = "/var/lib/jupyter-ptcuda-broker/queue.sqlite"  # jobs waiting for GPUs, kept across restarts
