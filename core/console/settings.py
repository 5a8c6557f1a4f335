"""The operator console's settings (environment and ``.env``), read once at start-up.

The console is off unless ``PARLEY_CONSOLE_PASSWORD`` is set (one shared operator) or
``PARLEY_CONSOLE_ACCOUNTS=true`` (people sign in with accounts made by ``parley console user add``).
The price table says what a million tokens cost per model, in US dollars, so the overview can estimate
spend; override or extend it with ``PARLEY_CONSOLE_PRICES``
(JSON: ``{"my-model": {"input": 0.5, "output": 1.5}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.console.limits import parse_networks
from core.errors import ConfigError
from core.settings import describe_validation_error


class Price(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)


# Public list prices per million tokens at the time of writing; a deployment overrides what it pays.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
}


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Estimated cost of a turn's tokens. A model not in the table (nor a dated variant of one) costs 0."""

    prices: Mapping[str, Price]

    def price(self, model: str) -> Price | None:
        if model in self.prices:
            return self.prices[model]
        # "gpt-4o-mini-2024-07-18" is priced like "gpt-4o-mini": the longest known prefix wins.
        best = max((m for m in self.prices if model.startswith(m + "-")), key=len, default=None)
        return self.prices[best] if best is not None else None

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for one turn's tokens."""
        price = self.price(model)
        if price is None:
            return 0.0
        return (tokens_in * price.input + tokens_out * price.output) / 1_000_000


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    parley_console_password: SecretStr | None = None  # unset: no console
    parley_console_port: int | None = Field(default=None, ge=0, le=65535)  # unset: on the ops server
    parley_console_prices: dict[str, Price] = Field(default_factory=dict)  # merged over DEFAULT_PRICES
    parley_console_retention_days: int = Field(default=35, ge=1, le=400)  # daily aggregates kept
    parley_console_recent: int = Field(default=500, ge=10, le=50_000)  # conversations/handoffs indexed
    parley_console_session_hours: float = Field(default=12, gt=0, le=24 * 30)
    # Failed sign-ins per account (per browser that signed in before, or per account for all others) before
    # each further one doubles a wait; also attempts per client address per 5 minutes.
    parley_console_login_attempts: int = Field(default=10, ge=1)
    parley_console_accounts: bool = False  # serve the console for stored accounts even without the password
    # Proxies (addresses or CIDRs) whose X-Forwarded-For names the client: an ingress, a port-forward.
    parley_console_trusted_proxies: list[str] = Field(default_factory=list)
    parley_console_handoff_target_minutes: float = Field(default=15, gt=0)  # waiting longer shows in red

    @field_validator("parley_console_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("parley_console_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("must be at least 12 characters")
        return value

    @field_validator("parley_console_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a bad address fails at start-up, not at the first sign-in
        return value

    @property
    def enabled(self) -> bool:
        return self.parley_console_password is not None or self.parley_console_accounts

    @property
    def price_table(self) -> PriceTable:
        return PriceTable({**DEFAULT_PRICES, **self.parley_console_prices})


def load_console_settings(**overrides: object) -> ConsoleSettings:
    try:
        return ConsoleSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {describe_validation_error(exc, env=True)}") from None
