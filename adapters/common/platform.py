"""The contract of a platform package (``adapters.slack``, ``adapters.discord``) and its loaded form.

A platform package defines four module-level functions, checked by mypy wherever a module is used as a
:class:`PlatformModule` (see ``bots/cli.py``):

    load_settings(bot)                      env over the bot's bot.toml table over defaults, read once
    link_for(place)                         a link that opens the conversation ('' when there is none)
    build_delivery(deps, settings)          how queue workers show replies (any process: REST/Web API only)
    build_adapter(deps, settings, delivery) the event side; it may share the Delivery's stores
    check(deps, settings)                   problems, one line each, for ``parley check``

:class:`Platform` holds one package with its settings (loaded once) and its Delivery (built once), so the CLI
registers each Delivery once and never looks anything up by name.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from adapters.common.deps import EdgeDeps
from core.bot import BotSpec
from core.ops.delivery import Delivery
from core.ops.service import Servable
from core.types import Place

S = TypeVar("S")
D = TypeVar("D", bound=Delivery)


class PlatformModule(Protocol[S, D]):
    def load_settings(self, bot: BotSpec) -> S: ...

    def link_for(self, place: Place) -> str: ...

    def build_delivery(self, deps: EdgeDeps, settings: S) -> D: ...

    def build_adapter(self, deps: EdgeDeps, settings: S, delivery: D) -> Servable: ...

    async def check(self, deps: EdgeDeps, settings: S) -> list[str]: ...


class Platform(Generic[S, D]):
    """One platform of a bot: its settings read once, its Delivery built once."""

    def __init__(self, name: str, module: PlatformModule[S, D], bot: BotSpec) -> None:
        self.name = name
        self._module = module
        self.settings = module.load_settings(bot)
        self._delivery: D | None = None

    def link_for(self, place: Place) -> str:
        return self._module.link_for(place)

    def delivery(self, deps: EdgeDeps) -> D:
        if self._delivery is None:
            self._delivery = self._module.build_delivery(deps, self.settings)
        return self._delivery

    def adapter(self, deps: EdgeDeps) -> Servable:
        return self._module.build_adapter(deps, self.settings, self.delivery(deps))

    async def check(self, deps: EdgeDeps) -> list[str]:
        return await self._module.check(deps, self.settings)


class LoadedPlatform(Protocol):
    """A :class:`Platform` whatever its settings type: what the CLI drives."""

    name: str

    @property
    def settings(self) -> object: ...  # what the package read (bots add it to AppSettings.platforms)

    def link_for(self, place: Place) -> str: ...

    def delivery(self, deps: EdgeDeps) -> Delivery: ...

    def adapter(self, deps: EdgeDeps) -> Servable: ...

    async def check(self, deps: EdgeDeps) -> list[str]: ...
