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
- :mod:`.service` — ``launch / inspect / signal / logs / wait / remove / list``: the interface a remote
  backend (the Hub broker, Kubernetes) implements. :mod:`.engine` — the Docker seam under it (the only
  module that imports ``docker``). :mod:`.ledger` — GPU assignment, :mod:`.netns` — the namespace holder,
  :mod:`.reaper` — orphans, :mod:`.logstream` — following output.
"""
