"""Settings of the customer-intelligence assets: value thresholds, currency and FX, phone regions, hubs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field, ValidationError

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


def _value_default(name: str) -> Any:
    return ValueSettings.model_fields[name].default


def _linkage_default(name: str) -> Any:
    return LinkageSettings.__dataclass_fields__[name].default


class IntelligenceSettings(dg.ConfigurableResource):
    """Numbers the identity, value and consent transforms take, as Dagster config.

    Set them in the launchpad or the code location (``IntelligenceSettings(churn_high_days=120)``);
    an invalid combination fails the run with what to change.
    """

    reporting_currency: str = Field(
        default="USD", description="ISO 4217 code contact-level money, CLV and CLV tiers are expressed in."
    )
    fx_rates: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FX_TO_USD),
        description="Rate into the reporting currency per ISO currency (reporting amount = amount x rate). "
        "A currency without a rate keeps its own totals; its reporting-currency values are null and the "
        "fx_rates_complete check warns.",
    )
    default_region: str = Field(
        default="US",
        description="Phone region for numbers without a country code, when neither the address nor the "
        "store says otherwise.",
    )
    shop_regions: dict[str, str] = Field(
        default_factory=dict,
        description="Country (ISO alpha-2) per store domain for phones typed without a country code; a store "
        "not listed takes the commonest country of its customers' addresses.",
    )
    churn_high_days: int = Field(
        default=_value_default("churn_high_days"),
        description="No order for more days than this: churn risk high.",
    )
    churn_medium_days: int = Field(
        default=_value_default("churn_medium_days"),
        description="No order for more days than this: churn risk medium.",
    )
    clv_high: str = Field(
        default=str(_value_default("clv_high")),
        description="Net spend (reporting currency) above this: CLV tier high.",
    )
    clv_medium: str = Field(
        default=str(_value_default("clv_medium")),
        description="Net spend (reporting currency) above this: CLV tier medium.",
    )
    frequency_window_days: int = Field(
        default=_value_default("frequency_window_days"),
        description="Purchase frequency is per this many days.",
    )
    clv_time_unit: str = Field(
        default=_value_default("clv_time_unit"), description="BG/NBD time unit: day or week."
    )
    clv_monthly_discount_rate: float = Field(
        default=_value_default("clv_monthly_discount_rate"),
        description="Per-month discount rate of predicted CLV (0.01 is about 12.7 % a year).",
    )
    hub_max_names: int = Field(
        default=_linkage_default("hub_max_names"),
        description="An email or phone seen with more distinct first names than this links nobody.",
    )
    hub_max_records: int = Field(
        default=_linkage_default("hub_max_records"),
        description="An email or phone on more records than this links nobody (an office inbox).",
    )

    def value_settings(self) -> ValueSettings:
        """Metrics, RFM and CLV thresholds for this deployment (a ``dg.Failure`` naming the bad value)."""
        try:
            return ValueSettings(
                reporting_currency=self.reporting_currency.strip().upper(),
                churn_high_days=self.churn_high_days,
                churn_medium_days=self.churn_medium_days,
                clv_high=Decimal(self.clv_high),
                clv_medium=Decimal(self.clv_medium),
                frequency_window_days=self.frequency_window_days,
                clv_time_unit=self.clv_time_unit,  # type: ignore[arg-type]
                clv_monthly_discount_rate=self.clv_monthly_discount_rate,
            )
        except (ValidationError, InvalidOperation) as exc:
            raise dg.Failure(description=_settings_problem(exc), allow_retries=False) from None

    def linkage_settings(self, store_regions: dict[str, str] | None = None) -> LinkageSettings:
        """Identity linkage settings for this deployment.

        ``store_regions`` (each store's country found in the data) is overridden per store by
        the configured ``shop_regions``.
        """
        regions = (store_regions or {}) | {k: v.strip().upper() for k, v in self.shop_regions.items()}
        return LinkageSettings(
            default_region=self.default_region.strip().upper(),
            shop_regions=regions,
            hub_max_names=self.hub_max_names,
            hub_max_records=self.hub_max_records,
        )

    def fx(self) -> pl.DataFrame:
        """The FX table the metrics take (``currency_code, rate_to_reporting``)."""
        try:
            rates = [Decimal(v) for v in self.fx_rates.values()]
        except InvalidOperation:
            bad = [k for k, v in self.fx_rates.items() if not _is_decimal(v)]
            raise dg.Failure(
                description=f'fx_rates for {", ".join(bad)} must be numbers such as "1.27".',
                allow_retries=False,
            ) from None
        return pl.DataFrame(
            {"currency_code": [c.strip().upper() for c in self.fx_rates], "rate_to_reporting": rates},
            schema=FX_SCHEMA,
        )


def _is_decimal(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


def _settings_problem(exc: Exception) -> str:
    """A configuration error in the product's words: which setting, what is wrong."""
    if isinstance(exc, InvalidOperation):
        return 'clv_high and clv_medium must be numbers such as "1000" (IntelligenceSettings).'
    assert isinstance(exc, ValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "IntelligenceSettings are not valid: " + "; ".join(problems) + "."


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
