"""Thresholds and conventions for customer value: metrics, RFM and predictive CLV.

One pydantic model, ``ValueSettings``, carries every number the value transforms use, with
defaults from the product's published guidance (churn risk at 45/90 days, CLV tiers at
300/1000 in the reporting currency). It is data passed into the transforms, never read from
the environment; the orchestration layer builds it from configuration.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TIME_UNIT_DAYS: dict[str, int] = {"day": 1, "week": 7}
# An average Gregorian month; the CLV horizon and its discounting are counted in these.
DAYS_PER_MONTH = 365.25 / 12


class ValueSettings(BaseModel):
    """Thresholds for customer metrics, RFM and CLV (all money in the reporting currency)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reporting_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code that contact-level money and CLV tiers are expressed in.",
    )
    churn_high_days: int = Field(default=90, ge=1, description="No order for more days than this: high.")
    churn_medium_days: int = Field(default=45, ge=0, description="No order for more days than this: medium.")
    clv_high: Decimal = Field(default=Decimal("1000"), ge=0, description="Net spend above this: high tier.")
    clv_medium: Decimal = Field(
        default=Decimal("300"), ge=0, description="Net spend above this: medium tier."
    )
    frequency_window_days: int = Field(
        default=30, ge=1, description="Purchase frequency is per this many days."
    )
    clv_time_unit: Literal["day", "week"] = Field(
        default="week", description="Time unit BG/NBD recency and T are measured in."
    )
    clv_horizon_months: int = Field(default=12, ge=1, le=120, description="CLV horizon in months.")
    clv_monthly_discount_rate: float = Field(
        default=0.01, ge=0.0, lt=1.0, description="Per-month discount rate for CLV (0.01 ≈ 12.7 % a year)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ValueSettings:
        if self.churn_medium_days >= self.churn_high_days:
            raise ValueError("churn_medium_days must be smaller than churn_high_days")
        if self.clv_medium >= self.clv_high:
            raise ValueError("clv_medium must be smaller than clv_high")
        return self

    @property
    def time_unit_days(self) -> int:
        """Length of the CLV time unit in days (1 or 7)."""
        return TIME_UNIT_DAYS[self.clv_time_unit]
