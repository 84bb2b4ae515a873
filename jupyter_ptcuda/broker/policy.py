"""The broker's policy as one frozen value, built once from ``c.PtcudaBroker.*`` (:meth:`BrokerPolicy.of`).

The operations (:mod:`.ops`) read only this, never the Application: what a user may run (image patterns),
where (mount roots per user), who they are on this host (user map / resolver) and every ceiling and quota.
:meth:`BrokerPolicy.for_user` gives the container builder's :class:`~jupyter_ptcuda.containers.build.Policy`
for one Hub user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..containers.build import Policy
from ..containers.gpus import ALL
from ..containers.spec import parse_size
from . import users as U


@dataclasses.dataclass(frozen=True)
class BrokerPolicy:
    images: tuple[str, ...] = ("jupyter-ptcuda/*",)
    mount_roots: tuple[str, ...] = ("{home}",)
    user_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user_resolver: Callable[[str], tuple[int, int]] | None = None
    max_gpus: int | None = None
    max_kernels: int = 8
    max_mem: int | None = None
    max_cpus: float | None = None
    max_pids: int = 4096
    max_long_calls: int = 8
    max_terminals: int = 16
    max_private_dirs: int = 32
    private_root: str = "/run/jupyter-ptcuda-broker"

    @classmethod
    def of(cls, config: Any) -> BrokerPolicy:
        """The policy of a configured :class:`~.app.PtcudaBroker` (or anything with its trait names)."""
        return cls(images=tuple(config.images), mount_roots=tuple(config.mount_roots), user_map=dict(config.user_map),
                   user_resolver=config.user_resolver, max_gpus=config.max_gpus, max_kernels=int(config.max_kernels),
                   max_mem=parse_size(config.max_mem, "c.PtcudaBroker.max_mem"), max_cpus=config.max_cpus,
                   max_pids=int(config.max_pids), max_long_calls=int(config.max_long_calls),
                   max_terminals=int(config.max_terminals), max_private_dirs=int(config.max_private_dirs),
                   private_root=str(config.private_root))

    def user(self, name: str) -> U.HubUser:
        """The Hub user ``name`` on this host (uid:gid), or the refusal."""
        return U.resolve_user(name, self.user_map, self.user_resolver)

    def for_user(self, user: U.HubUser) -> Policy:
        """The container builder's policy for ``user``: the image patterns only (nothing built locally), their
        own mount roots, the ceilings, never root."""
        return Policy(images=(), image_patterns=self.images, allow_built_images=False,
                      mount_roots=U.mount_roots(self.mount_roots, user), max_gpus=ALL, max_mem=self.max_mem,
                      max_cpus=self.max_cpus, allow_root=False, source="c.PtcudaBroker")
