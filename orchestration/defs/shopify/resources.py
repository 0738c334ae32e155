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
from orchestration.control.projects import ProjectPaths
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.settings import FetchSettings


class ShopifyStores(dg.ConfigurableResource):
    """The store registry, and Shopify clients built from its (decrypted) credentials.

    Leave a field unset to take it from the environment (``SHOPSYNC_DATA_DIR``,
    ``SHOPSYNC_CONTROL_URL``, ``SHOPSYNC_SECRET_KEY``, ``SHOPSYNC_PROJECT``) when the run
    starts. ``project`` is the one project this code location serves: schedules, sensors
    and checks see only its stores.
    """

    data_dir: str | None = None
    control_url: str | None = None
    secret_key: str | None = None
    project: str | None = None
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
        if self.project:
            overrides["project"] = self.project
        return ControlSettings(**overrides)

    def registry(self) -> StoreRegistry:
        """The store registry, listing this location's project only (opened once per resource instance)."""
        if self._registry is None:
            settings = self.settings()
            self._registry = StoreRegistry(settings, project=settings.project)
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
        if registry.project is not None and store.project != registry.project:
            # Its data belongs in another project's warehouse, which this location does not serve.
            raise dg.Failure(
                description=(
                    f"Store {domain} belongs to project {store.project!r}; this code location serves "
                    f"project {registry.project!r}. Run it from {store.project!r}'s code location."
                ),
                allow_retries=False,
            )
        return ShopifyClient(domain, **registry.client_options(domain))

    def shared_state_dir(self) -> Path:
        """Where the processes calling a shop share its rate-limit bucket and bulk-job slots."""
        return self.registry().shared_state_dir

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
    """Where the warehouse, the landing zone and the fetch cursors live.

    Unset paths are the project's (``project``, else ``SHOPSYNC_PROJECT``, else "default"):
    ``data/warehouse.duckdb``, ``data/landing``, ``data/state`` for the default project,
    ``data/projects/<name>/...`` for another, under ``SHOPSYNC_DATA_DIR`` when set.
    """

    warehouse: str | None = None
    landing_root: str | None = None
    state_dir: str | None = None
    project: str | None = None

    def _project(self) -> ProjectPaths:
        settings = ControlSettings(**({"project": self.project} if self.project else {}))
        return ProjectPaths.resolve(settings.project, settings.data_dir)

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB warehouse file."""
        return Path(self.warehouse) if self.warehouse else self._project().warehouse

    @property
    def landing_path(self) -> Path:
        """The landing zone root."""
        return Path(self.landing_root) if self.landing_root else self._project().landing

    @property
    def state_path(self) -> Path:
        """The folder of fetch cursors and persisted bulk job ids."""
        return Path(self.state_dir) if self.state_dir else self._project().state

    @classmethod
    def under(cls, data_dir: Path) -> SyncPaths:
        """All paths under one data folder (the demo's, a test's ``tmp_path``)."""
        return cls(
            warehouse=str(data_dir / "warehouse.duckdb"),
            landing_root=str(data_dir / "landing"),
            state_dir=str(data_dir / "state"),
        )
