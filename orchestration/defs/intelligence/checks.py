"""Asset checks on ``core.*``: stable unique contact ids, one contact per record, sane scores, the ratchet.

Each rule is a plain function over frames (testable alone); the Dagster checks read the
frames from the warehouse (pool ``warehouse``) and call them.
"""

from collections.abc import Callable

import dagster as dg
import duckdb
import polars as pl

from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.intelligence.assets import core_key, fx_warning
from orchestration.defs.intelligence.resources import IntelligenceSettings
from orchestration.defs.shopify.resources import SyncPaths
from pipelines import warehouse_io as wio
from transforms import consent_history as history
from transforms.consent import OBSERVATIONS_SCHEMA, RESOLVED_SCHEMA, ratchet_violations
from transforms.identity import EVENT_SCHEMA, IDENTITY_SCHEMA
from transforms.metrics import currencies_without_rate

_SAMPLE = 10


def duplicate_contact_ids(contacts: pl.DataFrame) -> list[str]:
    """Contact ids that appear on more than one ``core.contacts`` row."""
    return sorted(contacts.filter(pl.col("contact_id").is_duplicated())["contact_id"].unique().to_list())


def lost_contact_ids(previous: pl.DataFrame, current: pl.DataFrame, events: pl.DataFrame) -> list[str]:
    """Previous contact ids gone from ``current`` without a merge event naming them (should be none).

    A contact id may only disappear by being merged into another one; ``events`` are the
    current run's merge/split events.
    """
    gone = set(previous["contact_id"].unique().to_list()) - set(current["contact_id"].unique().to_list())
    merges = events.filter(pl.col("event_type") == "merge")
    merged = set(merges.explode("related_contact_ids")["related_contact_ids"].drop_nulls().to_list())
    return sorted(gone - merged)


def records_in_several_contacts(identities: pl.DataFrame) -> int:
    """How many records (shop, record_type, record_id) are mapped to more than one contact."""
    return int(
        identities.group_by("shop", "record_type", "record_id")
        .agg(n=pl.col("contact_id").n_unique())
        .filter(pl.col("n") > 1)
        .height
    )


def rfm_scores_out_of_range(metrics: pl.DataFrame) -> int:
    """Rows with an R, F or M score outside 1..5 (null scores, prospects, are fine)."""
    bad = pl.lit(False)
    for col in ("r_score", "f_score", "m_score"):
        bad = bad | ~pl.col(col).is_between(1, 5).fill_null(True)
    return int(metrics.filter(bad).height)


def negative_clv(metrics: pl.DataFrame) -> int:
    """Rows with a negative predicted CLV, expected purchases or spend."""
    cols = [c for c in metrics.columns if c.startswith("clv_") and c != "clv_tier"]
    cols += [
        c
        for c in ("expected_purchases_12m", "predicted_average_value", "total_spent")
        if c in metrics.columns
    ]
    if not cols:
        return 0
    bad = pl.any_horizontal([(pl.col(c).cast(pl.Float64) < 0).fill_null(False) for c in cols])
    return int(metrics.filter(bad).height)


def _read(paths: SyncPaths, reads: Callable[..., dict[str, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    con = wio.connect(paths.warehouse_path, read_only=True)
    try:
        return reads(con)
    finally:
        con.close()


def _result(failures: int, description: str, sample: list[str] | None = None) -> dg.AssetCheckResult:
    metadata: dict[str, dg.MetadataValue] = {"failures": dg.MetadataValue.int(failures)}
    if sample:
        metadata["sample"] = dg.MetadataValue.json(sample[:_SAMPLE])
    return dg.AssetCheckResult(passed=failures == 0, description=description, metadata=metadata)


@dg.asset_check(asset=core_key("contact_identities"), **IN_WAREHOUSE, blocking=False)
def contact_ids_stable(paths: SyncPaths) -> dg.AssetCheckResult:
    """No contact id disappeared since the last run without a merge event."""

    def reads(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
        events = wio.read_table(con, "core.identity_events")
        if events.height:
            events = events.filter(pl.col("run_number") == pl.col("run_number").max())
        return {
            "previous": wio.read_table(con, "core.contact_identities_previous", schema=IDENTITY_SCHEMA),
            "current": wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA),
            "events": events.select(list(EVENT_SCHEMA))
            if events.height
            else pl.DataFrame(schema=EVENT_SCHEMA),
        }

    frames = _read(paths, reads)
    lost = lost_contact_ids(frames["previous"], frames["current"], frames["events"])
    return _result(len(lost), "Contact ids lost without a merge event", lost)


@dg.asset_check(asset=core_key("contact_identities"), **IN_WAREHOUSE)
def one_contact_per_record(paths: SyncPaths) -> dg.AssetCheckResult:
    """No customer record, guest order or checkout belongs to two contacts."""
    frames = _read(
        paths, lambda con: {"ids": wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA)}
    )
    return _result(records_in_several_contacts(frames["ids"]), "Records mapped to several contacts")


@dg.asset_check(asset=core_key("contacts"), **IN_WAREHOUSE)
def contact_ids_unique(paths: SyncPaths) -> dg.AssetCheckResult:
    """Each contact id is one golden record."""
    frames = _read(paths, lambda con: {"contacts": wio.read_table(con, "core.contacts")})
    dupes = duplicate_contact_ids(frames["contacts"])
    return _result(len(dupes), "Contact ids on several rows", dupes)


@dg.asset_check(asset=core_key("contact_metrics"), **IN_WAREHOUSE)
def rfm_scores_in_range(paths: SyncPaths) -> dg.AssetCheckResult:
    """R, F and M scores are 1..5."""
    frames = _read(paths, lambda con: {"m": wio.read_table(con, "core.contact_metrics")})
    return _result(rfm_scores_out_of_range(frames["m"]), "Contacts with an RFM score outside 1..5")


@dg.asset_check(asset=core_key("contact_metrics"), **IN_WAREHOUSE)
def clv_not_negative(paths: SyncPaths) -> dg.AssetCheckResult:
    """Predicted CLV and its parts are never negative."""
    frames = _read(paths, lambda con: {"m": wio.read_table(con, "core.contact_metrics")})
    return _result(negative_clv(frames["m"]), "Contacts with a negative CLV or spend")


@dg.asset_check(asset=core_key("contact_metrics"), **IN_WAREHOUSE)
def fx_rates_complete(paths: SyncPaths, intelligence: IntelligenceSettings) -> dg.AssetCheckResult:
    """Every order currency has a rate to the reporting currency (a warning: totals per currency stay)."""

    def reads(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
        if not wio.table_exists(con, "shopify.orders"):
            return {"orders": pl.DataFrame(schema={"currency_code": pl.String})}
        return {
            "orders": con.sql(
                "SELECT DISTINCT currency_code FROM shopify.orders WHERE _deleted_at IS NULL"
            ).pl()
        }

    settings = intelligence.value_settings()
    unrated = currencies_without_rate(_read(paths, reads)["orders"], intelligence.fx(), settings)
    if not unrated:
        return _result(0, f"Every order currency converts to {settings.reporting_currency}")
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=fx_warning(unrated, settings.reporting_currency),
        metadata={
            "failures": dg.MetadataValue.int(len(unrated)),
            "currencies": dg.MetadataValue.json(unrated),
        },
    )


@dg.asset_check(asset=core_key("consent"), **IN_WAREHOUSE)
def consent_ratchet_holds(paths: SyncPaths) -> dg.AssetCheckResult:
    """No record or person is subscribed while an unsubscribe at least as recent exists: in this
    run's observations, or in the state the warehouse recorded on the previous run."""
    frames = _read(
        paths,
        lambda con: {
            "obs": wio.read_table(con, "core.consent_observations", schema=OBSERVATIONS_SCHEMA),
            "resolved": wio.read_table(con, "core.consent", schema=RESOLVED_SCHEMA),
            "previous": wio.read_table(con, "core.consent_previous", schema=RESOLVED_SCHEMA),
            "contacts": wio.read_table(
                con, "core.contact_consent_records", schema=history.CONTACT_RECORDS_SCHEMA
            ),
            "previous_contacts": wio.read_table(
                con, "core.contact_consent_records_previous", schema=history.CONTACT_RECORDS_SCHEMA
            ),
        },
    )
    violations = ratchet_violations(frames["obs"], frames["resolved"])
    sample = [f"{v.shop}/{v.customer_id}/{v.channel}" for v in violations]
    records = history.regressions(frames["previous"], frames["resolved"])
    contacts = history.regressions(frames["previous_contacts"], frames["contacts"])
    for label, frame in (("record", records), ("contact of", contacts)):
        sample += [
            f"{label} {r['shop']}/{r['customer_id']}/{r['channel']}" for r in frame.iter_rows(named=True)
        ]
    failures = len(violations) + records.height + contacts.height
    return _result(
        failures,
        "Subscribed records or people an unsubscribe (this run's, or the one recorded before) should have beaten",
        sample,
    )


intelligence_checks: list[dg.AssetChecksDefinition] = [
    contact_ids_stable,
    one_contact_per_record,
    contact_ids_unique,
    rfm_scores_in_range,
    clv_not_negative,
    fx_rates_complete,
    consent_ratchet_holds,
]
