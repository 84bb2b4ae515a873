"""The broker client backend: :mod:`.service` (:class:`~.service.RemoteContainerService`, one HTTP call to the
JupyterHub broker per operation), :mod:`.tty` (terminals over the broker's websocket) and :mod:`.gpus` (the
broker's GPU telemetry and ledger as the user's server sees them)."""
