"""The jupyter_server extension: REST API under ``{base_url}/jupyter-ptcuda/``.

- :mod:`.extension` — the ExtensionApp, its config, background tasks (sampler, reaper).
- :mod:`.base` — the base handler: auth, JSON bodies, domain errors → HTTP status.
- :mod:`.handlers` — gpus, kernels, health, metrics. :mod:`.job_handlers` — exports and jobs.
"""
