"""jupyter-ptcuda: PyTorch-CUDA Jupyter kernels in Docker containers."""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict]:
    from .server.extension import PtcudaExtension

    return [{"module": "jupyter_ptcuda", "app": PtcudaExtension}]


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextension", "dest": "jupyter-ptcuda"}]
