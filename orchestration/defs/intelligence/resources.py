"""Settings of the customer-intelligence assets: reporting currency, FX rates, phone region."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import dagster as dg
import polars as pl
from pydantic import Field

from transforms.identity import LinkageSettings
from transforms.metrics import FX_SCHEMA
from transforms.settings import ValueSettings

# Reference rates into USD (USD per unit); a deployment sets its own through config.
DEFAULT_FX_TO_USD: dict[str, str] = {
    "USD": "1",
    "GBP": "1.2658227848",
    "CAD": "0.7299270073",
    "EUR": "1.0869565217",
    "AUD": "0.6578947368",
}


class IntelligenceSettings(dg.ConfigurableResource):
    """Numbers the identity, value and consent transforms take, as Dagster config."""

    reporting_currency: str = "USD"
    fx_rates: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FX_TO_USD),
        description="Rate into the reporting currency per ISO currency (reporting amount = amount x rate).",
    )
    default_region: str = Field(default="US", description="Phone region for numbers without a country code.")

    def value_settings(self) -> ValueSettings:
        """Metrics, RFM and CLV thresholds for this deployment."""
        return ValueSettings(reporting_currency=self.reporting_currency)

    def linkage_settings(self) -> LinkageSettings:
        """Identity linkage settings for this deployment."""
        return LinkageSettings(default_region=self.default_region)

    def fx(self) -> pl.DataFrame:
        """The FX table the metrics take (``currency_code, rate_to_reporting``)."""
        return pl.DataFrame(
            {
                "currency_code": list(self.fx_rates),
                "rate_to_reporting": [Decimal(v) for v in self.fx_rates.values()],
            }
        ).cast(FX_SCHEMA)  # type: ignore[arg-type]


class IntelligenceConfig(dg.Config):
    """Run config of the intelligence assets."""

    as_of: str = Field(
        default="",
        description="Compute as of this ISO date (midnight UTC) or datetime; empty: when the run started.",
    )


def parse_as_of(value: str, run_started: datetime) -> datetime:
    """The ``as_of`` datetime (UTC) from config; a bare date means that day's midnight UTC."""
    text = value.strip()
    if not text:
        return run_started.astimezone(UTC)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise dg.Failure(
            description=f"as_of {value!r} is not an ISO date or datetime; use e.g. 2026-11-22.",
            allow_retries=False,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
