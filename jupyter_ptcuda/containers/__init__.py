"""Containers: the one layer that describes and launches every container we run.

Kinds: kernel, job, health (check), probe (of an image), netns (the shared-namespace holder).

- :mod:`.build` — ``build(request, policy, identity) -> ContainerSpec``: pure, every refusal in one place.
- :mod:`.spec` — the spec as data and its Docker create arguments (and back: ``spec_from_container``).
- :mod:`.labels` — the labels: written and read here only. :mod:`.gpus` — the GPU vocabulary.
- :mod:`.identity` — who asks; :mod:`.policy` — what the operator allows (traitlets + pure ceilings);
  :mod:`.options` — ``c.ContainerOptions``, the traits that make a request.
- :mod:`.types` — the value types every backend returns (``ContainerState``, ``ImageInfo``, ``Launched``);
  :mod:`.tty` — which container a command or shell runs in and as whom (``ExecTarget``), the shell
  session (``TtySession``; Docker's ``EngineTty``).
- :mod:`.base` — ``ContainerService``, the interface (an ABC with declared capabilities); the backends,
  each complete: :mod:`.docker` (over :mod:`.engine`, the only module that imports ``docker``; its
  namespace holder :mod:`.docker.netns`), :mod:`.kube`, :mod:`.remote` (the Hub broker's client);
  :mod:`.factory` — the only place that chooses one. :mod:`.allocating` — GPU allocation around any
  backend, from :mod:`.ledger`. :mod:`.wire` — the broker's wire format (a request out, states back).
  :mod:`.reaper` — orphans, :mod:`.idle` — idleness, :mod:`.logstream` — following output.
"""
