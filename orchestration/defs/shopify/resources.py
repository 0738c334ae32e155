"""Resources of the Shopify code: the store registry / client factory, and the data paths.

Configuration reaches them through Dagster config (``EnvVar`` where a deployment wants it)
or, for anything left unset, through ``ControlSettings`` which reads ``SHOPSYNC_*`` at run
time, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from orchestration.control import ControlSettings, StoreNotFound, StoreRegistry, StoreStatus
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.settings import FetchSettings


class ShopifyStores(dg.ConfigurableResource):
    """The store registry, and Shopify clients built from its (decrypted) credentials.

    Leave a field unset to take it from the environment (``SHOPSYNC_DATA_DIR``,
    ``SHOPSYNC_CONTROL_URL``, ``SHOPSYNC_SECRET_KEY``) when the run starts.
    """

    data_dir: str | None = None
    control_url: str | None = None
    secret_key: str | None = None
    # How often a running bulk export is polled; a local devstore finishes in milliseconds.
    bulk_poll_interval_s: float = 2.0

    _registry: StoreRegistry | None = PrivateAttr(default=None)

    def settings(self) -> ControlSettings:
        """Control-plane settings: explicit config first, then the environment."""
        overrides: dict[str, Any] = {}
        if self.data_dir:
            overrides["data_dir"] = Path(self.data_dir)
        if self.control_url:
            overrides["control_url"] = self.control_url
        if self.secret_key:
            overrides["secret_key"] = self.secret_key
        return ControlSettings(**overrides)

    def registry(self) -> StoreRegistry:
        """The store registry (opened once per resource instance)."""
        if self._registry is None:
            self._registry = StoreRegistry(self.settings())
        return self._registry

    def client_for(self, domain: str) -> ShopifyClient:
        """A Shopify client for a registered store, or a ``dg.Failure`` saying what to do."""
        registry = self.registry()
        try:
            store = registry.get_store(domain)
        except StoreNotFound as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        # Disconnected is a pause the user chose: nothing runs. Reconnect required does not stop
        # a run: the entities whose scopes are granted still sync (the schedules keep running
        # such a store unless Shopify refused its token), and a revoked token fails with
        # Shopify's own answer.
        if store.status == StoreStatus.DISCONNECTED:
            raise dg.Failure(
                description=(
                    f"Store {domain} is Disconnected; syncing is paused. "
                    f"Resume it with: shopsync stores reconnect {domain} --token ..."
                ),
                allow_retries=False,
            )
        secret = registry.credentials(domain)
        return ShopifyClient(
            domain,
            access_token=secret.get("access_token") or None,
            client_id=secret.get("client_id"),
            client_secret=secret.get("client_secret"),
            base_url=store.api_base_url,
            # every run's process calling this shop (one per entity fetch) paces to one bucket
            shared_dir=self.shared_state_dir(),
        )

    def shared_state_dir(self) -> Path:
        """Where the processes calling a shop share its rate-limit bucket and bulk-job slots."""
        return self.settings().data_dir / "shopify_shared"

    def fetch_settings(self) -> FetchSettings:
        """Fetcher tunables for this deployment (polling backs off to 15x the first interval)."""
        return FetchSettings(
            poll_interval_s=self.bulk_poll_interval_s, max_poll_interval_s=15 * self.bulk_poll_interval_s
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the registry's connections at the end of a run."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None


class SyncPaths(dg.ConfigurableResource):
    """Where the warehouse, the landing zone and the fetch cursors live."""

    warehouse: str = "data/warehouse.duckdb"
    landing_root: str = "data/landing"
    state_dir: str = "data/state"

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB warehouse file."""
        return Path(self.warehouse)

    @property
    def landing_path(self) -> Path:
        """The landing zone root."""
        return Path(self.landing_root)

    @property
    def state_path(self) -> Path:
        """The folder of fetch cursors and persisted bulk job ids."""
        return Path(self.state_dir)

    @classmethod
    def under(cls, data_dir: Path) -> SyncPaths:
        """All paths under one data folder (the demo's, a test's ``tmp_path``)."""
        return cls(
            warehouse=str(data_dir / "warehouse.duckdb"),
            landing_root=str(data_dir / "landing"),
            state_dir=str(data_dir / "state"),
        )
