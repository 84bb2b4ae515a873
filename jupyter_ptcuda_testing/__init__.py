"""Test doubles shipped beside jupyter-ptcuda, outside the product's import path.

- :mod:`.nvml` — a faithful fake of nvidia-ml-py's ``pynvml`` (:func:`~.nvml.make_fake_nvml`) for hosts
  without a GPU: unit tests, UI tests, demos and the JupyterHub tests' broker.

Nothing in ``jupyter_ptcuda`` imports this package. A server or broker loads the fake NVML only when its
configuration names it (``c.PtcudaExtension.nvml = "fake:2"``, ``c.PtcudaBroker.nvml = "fake:2"``, or
``jupyter ptcuda gpus --nvml fake:2``), never from an environment variable, and says so in its log
(:func:`jupyter_ptcuda.nvml.nvml_from_config`).
"""
