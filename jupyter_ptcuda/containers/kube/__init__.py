"""The Kubernetes backend of the container service: :mod:`.pods` (the pure pod/Job builder),
:mod:`.options` (``c.KubeBackend.*``), :mod:`.backend` (:class:`~.backend.KubeContainerService`, the only
module that imports ``kubernetes_asyncio``, an optional dependency: ``pip install "jupyter-ptcuda[kubernetes]"``).
Callers never ask whether they have it: they read the backend's declared capabilities (:mod:`..base`).
"""
