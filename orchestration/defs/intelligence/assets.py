"""Customer intelligence in the warehouse: identities, value metrics, consent, golden contacts.

Each asset reads ``shopify.*`` (and the previous ``core.*``) through ``pipelines.warehouse_io``,
calls the pure transforms and writes ``core.*`` back in one transaction. They hold the
warehouse (pool ``warehouse``), are unpartitioned because identity spans stores, and update
eagerly after loads. ``as_of`` comes from run config (the nightly schedule passes its tick
date) or, when empty, is the run's start time; the transforms never read the clock.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.intelligence.resources import IntelligenceConfig, IntelligenceSettings, parse_as_of
from orchestration.defs.shopify.jobs import table_key
from orchestration.defs.shopify.resources import SyncPaths
from pipelines import warehouse_io as wio
from pipelines.crm_feed import import_inbox as import_crm_inbox
from pipelines.engagement_load import load_crm_edits, load_engagement_events
from pipelines.snapshot import publish_snapshot
from transforms import consent as consent_tf
from transforms import consent_history as history
from transforms.contacts import CRM_EDITS_SCHEMA, build_contacts, carry_over_merges, field_ownership
from transforms.identity import IDENTITY_SCHEMA, resolve
from transforms.identity.sources import records_from_shopify
from transforms.metrics import MetricsInputError, contact_value, currencies_without_rate, customer_metrics
from transforms.warehouse_inputs import (
    customer_keys,
    drop_disabled_consent,
    engagement_frame,
    orders_with_contacts,
    shopify_consent_columns,
    store_regions,
    with_customer_lists,
)

EAGER = dg.AutomationCondition.eager()


def core_key(name: str) -> dg.AssetKey:
    """Key of a ``core.<name>`` asset."""
    return dg.AssetKey(["core", name])


SNAPSHOT_KEY = dg.AssetKey(["analyst", "snapshot"])
ENGAGEMENT_EVENTS = dg.AssetKey(["engagement", "events"])


def core_specs(
    docs: dict[str, str], group: str, deps: dict[str, list[dg.AssetKey]] | list[dg.AssetKey]
) -> list[dg.AssetSpec]:
    """Specs of the ``core.*`` tables one multi-asset writes; ``deps`` per table or shared."""
    return [
        dg.AssetSpec(
            core_key(name),
            description=doc,
            group_name=group,
            kinds={"duckdb", "polars"},
            automation_condition=EAGER,
            deps=deps.get(name, []) if isinstance(deps, dict) else deps,
        )
        for name, doc in docs.items()
    ]


IDENTITY_DOCS: dict[str, str] = {
    "contact_identities": "Who is who: every customer record, guest order and guest checkout of every store "
    "mapped to the contact (the person) it belongs to, with the rule that linked it and its confidence. "
    "Contact ids stay the same from run to run.",
    "identity_events": "History of contacts merging (two people found to be one) and splitting, one row per "
    "event per run: why a contact id disappeared or appeared.",
    "identity_review": "Pairs of records that might be the same person but were not merged automatically, with "
    "the evidence, for a person to decide.",
    "identity_outcomes": "One row per identity run with its counts (records, contacts, matches by rule, new "
    "contacts, ambiguous pairs): the health of identity resolution over time.",
}
METRICS_DOCS: dict[str, str] = {
    "customer_metrics": "Spend, orders, recency, churn risk and value tier per Shopify customer of each store, "
    "in the store's currency.",
    "contact_metrics": "Value per person across all stores in the reporting currency: spend, orders, churn "
    "risk, RFM scores and segment, and predicted 12-month customer lifetime value.",
}
CONSENT_DOCS: dict[str, str] = {
    "consent": "The marketing consent in force per customer record and channel (email, SMS), from Shopify and "
    "engagement (unsubscribe links, STOP replies); an unsubscribe is never undone by an older subscribe.",
    "contact_consent": "Whether each person may be marketed to by email and by SMS, across all their records.",
    "consent_audit": "Every change of a customer's consent state, when and from which source, and (in "
    "core.contact_consent_audit) of each person's, including changes a merge or split of contacts caused: the "
    "compliance trail.",
}


def fx_warning(currencies: list[str], reporting_currency: str) -> str:
    """What a missing exchange rate means for the user, and the fix."""
    listed = ", ".join(currencies)
    example = currencies[0]
    return (
        f"No exchange rate to {reporting_currency} for {listed}: totals in {listed} are kept as they were paid, "
        f"but their {reporting_currency} values (spend, AOV, CLV and its tier) are empty. Add a rate to the "
        f'IntelligenceSettings fx_rates, e.g. {example}: "0.0067" ({reporting_currency} per {example}).'
    )


def _run_started(context: dg.AssetExecutionContext) -> datetime:
    """When the run was created (so every step of one run shares one default ``as_of``)."""
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is not None and record.create_timestamp is not None:
        return record.create_timestamp.astimezone(UTC)
    return datetime.now(UTC)


def _as_of(context: dg.AssetExecutionContext, config: IntelligenceConfig) -> datetime:
    return parse_as_of(config.as_of, _run_started(context))


def _counts(written: dict[str, int]) -> dict[str, Any]:
    return {f"rows.{t}": dg.MetadataValue.int(n) for t, n in written.items()}


def _next_run_number(con: Any) -> int:
    if not wio.table_exists(con, "core.identity_outcomes"):
        return 1
    row = con.execute("SELECT coalesce(max(run_number), 0) + 1 FROM core.identity_outcomes").fetchone()
    return int(row[0])


@dg.multi_asset(
    specs=core_specs(
        IDENTITY_DOCS,
        "identity",
        {
            "contact_identities": [
                table_key("customers"),
                table_key("orders"),
                table_key("abandoned_checkouts"),
            ]
        },
    ),
    **IN_WAREHOUSE,
    name="core__identity",
)
def identity_assets(
    context: dg.AssetExecutionContext,
    config: IntelligenceConfig,
    paths: SyncPaths,
    intelligence: IntelligenceSettings,
) -> Iterator[dg.MaterializeResult]:
    """Resolve every store's customers, guest orders and checkouts into contacts with stable ids."""
    as_of = _as_of(context, config)
    con = wio.connect(paths.warehouse_path)
    try:
        records = records_from_shopify(
            wio.shopify_table(con, "customers"),
            wio.shopify_table(con, "customer_addresses"),
            wio.shopify_table(con, "orders"),
            wio.shopify_table(con, "abandoned_checkouts"),
        )
        previous = wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA)
        settings = intelligence.linkage_settings(store_regions(records))
        result = resolve(records, previous=previous if previous.height else None, settings=settings)
        run_number = _next_run_number(con)
        stamp = {"run_number": pl.lit(run_number, pl.Int64), "as_of": pl.lit(as_of, pl.Datetime("us", "UTC"))}
        counts = dict(result.outcomes.iter_rows())
        outcomes = pl.DataFrame({k: [v] for k, v in counts.items()}).with_columns(
            run_id=pl.lit(context.run_id), **stamp
        )
        written = wio.write_tables(
            con,
            {
                # last run's mapping, kept so the stability check can see which ids went where
                "core.contact_identities_previous": previous.select(
                    "shop", "record_type", "record_id", "contact_id"
                ),
                "core.contact_identities": result.contact_identities,
                "core.identity_review": result.identity_review,
            },
        )
        written.update(
            wio.write_tables(
                con,
                {
                    "core.identity_events": result.identity_events.with_columns(**stamp),
                    "core.identity_outcomes": outcomes,
                },
                mode="append",
            )
        )
    finally:
        con.close()
    context.log.info(f"Identity run {run_number}: {counts}")
    outcome_meta = {f"outcome.{k}": dg.MetadataValue.int(int(v)) for k, v in counts.items()}
    yield dg.MaterializeResult(
        asset_key=core_key("contact_identities"),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.contact_identities.height),
            "contacts": dg.MetadataValue.int(int(counts["contacts"])),
            "phone_regions": dg.MetadataValue.json(dict(sorted(settings.shop_regions.items()))),
            "as_of": as_of.isoformat(),
        },
    )
    yield dg.MaterializeResult(
        asset_key=core_key("identity_events"),
        metadata={
            "merges": dg.MetadataValue.int(int((result.identity_events["event_type"] == "merge").sum())),
            "splits": dg.MetadataValue.int(int((result.identity_events["event_type"] == "split").sum())),
        },
    )
    yield dg.MaterializeResult(
        asset_key=core_key("identity_review"),
        metadata={"dagster/row_count": dg.MetadataValue.int(result.identity_review.height)},
    )
    yield dg.MaterializeResult(
        asset_key=core_key("identity_outcomes"),
        metadata={"run_number": dg.MetadataValue.int(run_number), **outcome_meta, **_counts(written)},
    )


@dg.multi_asset(
    specs=core_specs(METRICS_DOCS, "metrics", [core_key("contact_identities"), table_key("orders")]),
    **IN_WAREHOUSE,
    name="core__metrics",
)
def metrics_assets(
    context: dg.AssetExecutionContext,
    config: IntelligenceConfig,
    paths: SyncPaths,
    intelligence: IntelligenceSettings,
) -> Iterator[dg.MaterializeResult]:
    """Value per customer and per contact: metrics, RFM segments and predicted CLV as of ``as_of``."""
    as_of = _as_of(context, config)
    settings = intelligence.value_settings()
    con = wio.connect(paths.warehouse_path)
    try:
        identities = wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA)
        orders = orders_with_contacts(wio.shopify_table(con, "orders"), identities)
        contacts = identities.select("contact_id").unique()
        fx = intelligence.fx()
        try:
            unrated = currencies_without_rate(orders, fx, settings)
            per_customer = customer_metrics(orders, as_of, settings, fx)
            per_contact = contact_value(orders, as_of, settings, fx, contacts)
        except MetricsInputError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        stamp = {"as_of": pl.lit(as_of, pl.Datetime("us", "UTC"))}
        written = wio.write_tables(
            con,
            {
                "core.customer_metrics": per_customer.with_columns(**stamp),
                "core.contact_metrics": per_contact.with_columns(**stamp),
            },
        )
    finally:
        con.close()
    if unrated:
        context.log.warning(fx_warning(unrated, settings.reporting_currency))
    segments = dict(per_contact.group_by("segment").len().sort("segment").iter_rows())
    clv_fitted = per_contact["clv_12m"].count() > 0 if "clv_12m" in per_contact.columns else False
    if not clv_fitted:
        # contact_value leaves the CLV columns null when the BG/NBD or Gamma-Gamma fit fails
        context.log.warning("CLV models could not be fitted on this data; clv_12m is null for every contact.")
    yield dg.MaterializeResult(
        asset_key=core_key("customer_metrics"),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written["core.customer_metrics"]),
            "as_of": as_of.isoformat(),
        },
    )
    yield dg.MaterializeResult(
        asset_key=core_key("contact_metrics"),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written["core.contact_metrics"]),
            "segments": dg.MetadataValue.json({str(k): int(v) for k, v in segments.items()}),
            "clv_fitted": dg.MetadataValue.bool(bool(clv_fitted)),
            "reporting_currency": settings.reporting_currency,
            "currencies_without_rate": dg.MetadataValue.json(unrated),
            "as_of": as_of.isoformat(),
        },
    )


@dg.multi_asset(
    specs=[
        # engagement.events (orchestration/defs/reverse_sync/engagement.py) feeds consent: the edge
        # orders the engagement feed job, which runs this asset itself, so eager ignores it (a
        # deployment that never loaded an engagement feed still refreshes consent after loads)
        spec.replace_attributes(
            automation_condition=EAGER.ignore(dg.AssetSelection.assets(ENGAGEMENT_EVENTS))
        )
        for spec in core_specs(
            CONSENT_DOCS,
            "consent",
            [core_key("contact_identities"), table_key("customers"), ENGAGEMENT_EVENTS],
        )
    ],
    **IN_WAREHOUSE,
    name="core__consent",
)
def consent_assets(
    context: dg.AssetExecutionContext,
    config: IntelligenceConfig,
    paths: SyncPaths,
    intelligence: IntelligenceSettings,
) -> Iterator[dg.MaterializeResult]:
    """Load pending engagement events, then resolve consent per record and per contact and audit changes."""
    as_of = _as_of(context, config)
    con = wio.connect(paths.warehouse_path)
    try:
        loaded = load_engagement_events(con, paths.landing_path)
        customers = wio.customer_profiles(con)
        regions = intelligence.linkage_settings(store_regions(customers)).shop_regions
        events = engagement_frame(wio.engagement_events(con), intelligence.default_region, regions)
        previous = wio.read_table(con, "core.consent", schema=consent_tf.RESOLVED_SCHEMA)
        previous_contacts = wio.read_table(
            con, "core.contact_consent_records", schema=history.CONTACT_RECORDS_SCHEMA
        )
        observations = pl.concat(
            [
                consent_tf.shopify_observations(
                    drop_disabled_consent(shopify_consent_columns(customers), wio.store_settings(con))
                ),
                consent_tf.engagement_observations(
                    events, customer_keys(customers, intelligence.default_region, regions)
                ),
                # what the warehouse recorded as unsubscribed stays so until something newer says otherwise
                history.carried_observations(previous).join(
                    customers.select("shop", pl.col("id").alias("customer_id")),
                    on=["shop", "customer_id"],
                    how="semi",
                ),
            ]
        )
        resolved = consent_tf.resolve_consent(observations)
        identities = wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA)
        customer_contacts = identities.filter(pl.col("record_type") == "customer").select(
            "shop", pl.col("record_id").cast(pl.Int64).alias("customer_id"), "contact_id"
        )
        per_contact = history.ratcheted_contact_consent(
            consent_tf.contact_consent(resolved, customer_contacts), previous_contacts, customer_contacts
        )
        by_record = history.contact_states_by_record(per_contact, customer_contacts)
        changes = consent_tf.consent_changes(
            previous if previous.height else None, resolved, recorded_at=as_of
        )
        contact_changes = history.contact_consent_changes(
            previous_contacts, per_contact, customer_contacts, recorded_at=as_of
        )
        written = wio.write_tables(
            con,
            {
                # the raw observations, so the ratchet check can recompute the rule independently
                "core.consent_observations": observations,
                # last run's states, so the check can tell a re-subscription by an older state
                "core.consent_previous": previous,
                "core.contact_consent_records_previous": previous_contacts,
                "core.consent": resolved,
                "core.contact_consent": per_contact,
                "core.contact_consent_records": by_record,
            },
        )
        written.update(
            wio.write_tables(
                con,
                {"core.consent_audit": changes, "core.contact_consent_audit": contact_changes},
                mode="append",
            )
        )
    finally:
        con.close()
    yield dg.MaterializeResult(
        asset_key=core_key("consent"),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(resolved.height),
            "engagement_events_loaded": dg.MetadataValue.int(loaded.inserted),
            "consenting": dg.MetadataValue.int(int(resolved["consented"].sum())),
        },
    )
    yield dg.MaterializeResult(
        asset_key=core_key("contact_consent"),
        metadata={"dagster/row_count": dg.MetadataValue.int(per_contact.height)},
    )
    yield dg.MaterializeResult(
        asset_key=core_key("consent_audit"),
        metadata={
            "changes": dg.MetadataValue.int(changes.height),
            "contact_changes": dg.MetadataValue.int(contact_changes.height),
            "contact_changes_by_reason": dg.MetadataValue.json(
                dict(contact_changes.group_by("reason").len().sort("reason").iter_rows())
            ),
            # read by the consent push sensor (orchestration/defs/reverse_sync)
            "pushable_shops": dg.MetadataValue.json(consent_tf.pushable_shops(changes)),
        },
    )


@dg.asset(
    key=core_key("contacts"),
    deps=[core_key("contact_identities"), core_key("contact_metrics"), core_key("contact_consent")],
    group_name="identity",
    kinds={"duckdb", "polars"},
    **IN_WAREHOUSE,
    automation_condition=EAGER,
)
def contacts_asset(context: dg.AssetExecutionContext, paths: SyncPaths) -> dg.MaterializeResult:
    """The golden record per person: Shopify profile (as first seen), CRM fields (as the CRM set them),
    and commerce value and consent (as shopsync computed them), under the field-ownership table.
    CRM edit files dropped in ``<landing>/_crm/field_edits/inbox/`` are imported first. Values refused
    because another side owns the field are counted in ``core.contact_blocked_overwrites``.
    """
    ownership = field_ownership()
    # files dropped in the CRM inbox become landing batches first (bad lines quarantined)
    dropped = import_crm_inbox(Path(paths.landing_path), set(ownership["field"].to_list()))
    for item in dropped:
        if item.quarantined:
            context.log.warning(
                f"CRM edit file {item.source.name}: {item.quarantined} line(s) quarantined with their reasons "
                f"in {item.quarantine_path}; {item.accepted} edit(s) imported."
            )
    con = wio.connect(paths.warehouse_path)
    try:
        crm = load_crm_edits(con, paths.landing_path)
        previous = wio.read_table(con, "core.contacts")
        events = wio.read_table(con, "core.identity_events")
        if previous.height and events.height:
            # a CRM edit on a contact that has since merged into another stays with the person
            latest = events.filter(pl.col("run_number") == pl.col("run_number").max())
            previous = carry_over_merges(previous, latest, ownership)
        contacts, blocked = build_contacts(
            wio.read_table(con, "core.contact_identities", schema=IDENTITY_SCHEMA),
            wio.customer_profiles(con),
            wio.read_table(con, "core.contact_metrics"),
            wio.read_table(
                con,
                "core.contact_consent",
                schema={"contact_id": pl.String, "channel": pl.String, "state": pl.String},
            ),
            wio.read_table(con, "crm.field_edits", schema=CRM_EDITS_SCHEMA),
            ownership,
            previous if previous.height else None,
        )
        contacts = with_customer_lists(contacts, wio.store_settings(con))
        wio.write_tables(con, {"core.contacts": contacts, "core.contact_blocked_overwrites": blocked})
    finally:
        con.close()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(contacts.height),
            "crm_edits_loaded": dg.MetadataValue.int(crm.inserted),
            "crm_files_imported": dg.MetadataValue.int(len(dropped)),
            "crm_lines_quarantined": dg.MetadataValue.int(sum(d.quarantined for d in dropped)),
            "blocked_overwrites": dg.MetadataValue.json(
                {f"{r['field']}<-{r['source']}": r["blocked"] for r in blocked.iter_rows(named=True)}
            ),
        }
    )


@dg.asset(
    key=SNAPSHOT_KEY,
    deps=[
        core_key("contacts"),
        core_key("contact_metrics"),
        core_key("customer_metrics"),
        core_key("consent_audit"),
        core_key("identity_review"),
        core_key("identity_outcomes"),
    ],
    group_name="analyst",
    kinds={"duckdb", "parquet"},
    **IN_WAREHOUSE,
    automation_condition=EAGER,
)
def analyst_snapshot(paths: SyncPaths) -> dg.MaterializeResult:
    """What analysts query: every shopify.*, core.* table and the sql/ marts as Parquet, behind a small
    read-only DuckDB file of views (``data/snapshot/analyst.duckdb``) swapped in atomically, so analysts
    never block the pipeline and never see half a refresh.
    """
    result = publish_snapshot(paths.warehouse_path, snapshot_dir(paths))
    return dg.MaterializeResult(
        metadata={
            "version": result.version,
            "path": dg.MetadataValue.path(str(result.database)),
            "views": dg.MetadataValue.int(len(result.views)),
        }
    )


def snapshot_dir(paths: SyncPaths) -> Any:
    """The snapshot folder next to the warehouse (``data/snapshot`` by default)."""
    return paths.warehouse_path.parent / "snapshot"


intelligence_assets: list[dg.AssetsDefinition] = [
    identity_assets,
    metrics_assets,
    consent_assets,
    contacts_asset,
    analyst_snapshot,
]
INTELLIGENCE_GROUPS: tuple[str, ...] = ("identity", "metrics", "consent", "analyst")
