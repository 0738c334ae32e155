"""The client side of Shopify bulk operations: submit, poll, cancel, download, resume.

A full export of one entity is a *plan* of ``updated_at`` slices, persisted in the state
folder with the bulk job id of every submitted slice. A restarted run loads the plan and
polls the jobs it already submitted instead of submitting them again. Shopify runs up to
``max_concurrent_jobs`` bulk queries per app and shop; the exports of one shop (each entity
is fetched in its own process) take turns through :class:`BulkSlots`, shared through the
client's ``shared_dir``. Should Shopify still answer LIMIT_REACHED (jobs of another machine,
or of a process that died), the slice waits for a job to finish and is submitted then. A job that runs longer than the slice timeout
is cancelled and its slice halved; a FAILED job's partial data is landed at once (as a
batch that is not complete) and its slice run again. When every slice is done their JSONL
files are joined, in slice order, into one landing batch.

Downloads go through their own plain httpx client: the result URL is a signed storage
URL, and the shop's access token must never be sent to it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from pipelines import landing
from pipelines.shopify import cursors, documents
from pipelines.shopify.client import ShopifyClient, ShopifyQueryError, ShopifyUnavailable, raise_user_errors
from pipelines.shopify.settings import FetchSettings
from pipelines.shopify.shared_state import SharedState, state_file

log = logging.getLogger("shopsync.shopify.bulk")

FINISHED = ("COMPLETED", "FAILED", "CANCELED", "EXPIRED")


@dataclass
class BulkJob:
    """One bulk operation as Shopify reports it."""

    id: str
    status: str
    error_code: str | None = None
    url: str | None = None
    partial_data_url: str | None = None
    object_count: int = 0


def submit(client: ShopifyClient, query: str) -> str:
    """Start a bulk query; returns the job id. Raises ``ShopifyQueryError`` on userErrors."""
    data = client.execute(documents.load("bulk_run"), {"query": query}, expected_cost=10)
    payload = data.get("bulkOperationRunQuery") or {}
    raise_user_errors(payload, "bulkOperationRunQuery", shop=client.shop)
    operation = payload.get("bulkOperation") or {}
    if not operation.get("id"):
        raise ShopifyQueryError(
            f"bulkOperationRunQuery returned no operation for {client.shop}", shop=client.shop
        )
    return str(operation["id"])


def status(client: ShopifyClient, job_id: str) -> BulkJob:
    """The current state of one bulk job."""
    data = client.execute(documents.load("bulk_status"), {"id": job_id}, expected_cost=1)
    node = data.get("node") or {}
    if not node:
        # the job is gone (Shopify keeps results for a week): treat it as expired
        return BulkJob(id=job_id, status="EXPIRED")
    return BulkJob(
        id=job_id,
        status=str(node.get("status")),
        error_code=node.get("errorCode"),
        url=node.get("url"),
        partial_data_url=node.get("partialDataUrl"),
        object_count=int(node.get("objectCount") or 0),
    )


def cancel(client: ShopifyClient, job_id: str) -> None:
    """Ask Shopify to cancel a job (an already finished job is not an error)."""
    data = client.execute(documents.load("bulk_cancel"), {"id": job_id}, expected_cost=10)
    errors = (data.get("bulkOperationCancel") or {}).get("userErrors") or []
    if errors:
        log.info(
            "cancel of %s on %s: %s", job_id, client.shop, "; ".join(e.get("message", "") for e in errors)
        )


def download(url: str, dest: Path, *, base_url: str, timeout: float = 300.0, attempts: int = 4) -> int:
    """Stream a result file to ``dest`` (never held in memory); returns its size in bytes."""
    full_url = urljoin(base_url + "/", url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(10.0, 0.2 * 2**attempt))
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0)) as http,
                http.stream("GET", full_url) as response,
            ):
                if response.status_code >= 400:
                    raise httpx.HTTPStatusError(
                        f"HTTP {response.status_code}", request=response.request, response=response
                    )
                size = 0
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
                        size += len(chunk)
            # a cut-off last line would be unreadable JSON: keep whole lines only
            _trim_partial_line(tmp)
            tmp.replace(dest)
            return dest.stat().st_size
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            last = exc
            log.warning(
                "download of a bulk result failed (attempt %d/%d): %s",
                attempt + 1,
                attempts,
                type(exc).__name__,
            )
    raise ShopifyUnavailable(
        f"Could not download a bulk export result after {attempts} attempts ({type(last).__name__}). "
        "The export's progress is saved; run the sync again to resume it."
    )


def _trim_partial_line(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, 2)
        if fh.read(1) == b"\n":
            return
        # walk back to the last newline; a partial file can end mid-line
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            index = chunk.rfind(b"\n")
            if index >= 0:
                fh.truncate(start + index + 1)
                return
            end = start
        fh.truncate(0)


# slots -------------------------------------------------------------------------------------
class BulkSlots:
    """The shop's bulk-operation slots, taken and given back by every export of the shop.

    A slot is taken before submitting (under a provisional key), renamed to the job id once
    Shopify accepts the job, renewed at every poll and given back when the job is seen
    finished or cancelled. A slot whose holder stopped polling (its process died) lapses
    after ``ttl_s``; a restarted run that resumes the job takes it again.
    """

    def __init__(
        self, path: Path | None, limit: int, *, ttl_s: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._state = SharedState(path)
        self.limit = max(1, limit)
        self.ttl_s = ttl_s
        self._clock = clock

    def _held(self, state: dict[str, Any]) -> dict[str, float]:
        now = self._clock()
        held = state.get("held")
        if not isinstance(held, dict):
            return {}
        return {k: float(v) for k, v in held.items() if isinstance(v, int | float) and v >= now}

    def take(self) -> str | None:
        """A provisional slot key, or None when every slot is held."""
        with self._state.edit() as state:
            held = self._held(state)
            if len(held) >= self.limit:
                state["held"] = held
                return None
            key = "pending-" + secrets.token_hex(4)
            held[key] = self._clock() + self.ttl_s
            state["held"] = held
            return key

    def hold(self, job_id: str, provisional: str | None = None) -> None:
        """Hold (or keep holding) a slot for a running job, replacing its provisional key."""
        with self._state.edit() as state:
            held = self._held(state)
            if provisional is not None:
                held.pop(provisional, None)
            held[job_id] = self._clock() + self.ttl_s
            state["held"] = held

    def give_back(self, key: str | None) -> None:
        """The job finished (or was never submitted): its slot is free."""
        if key is None:
            return
        with self._state.edit() as state:
            held = self._held(state)
            held.pop(key, None)
            state["held"] = held

    def count(self) -> int:
        """Slots held now."""
        with self._state.edit() as state:
            return len(self._held(state))


# the plan ----------------------------------------------------------------------------------
@dataclass
class Slice:
    """One ``updated_at`` slice of an export. ``start``/``end`` None = unbounded."""

    key: str  # sorts in time order; a halved slice's halves get key + "a" / "b"
    start: str | None
    end: str | None
    nominal_end: str | None = None  # where an open-ended slice would be cut when halved
    status: str = "pending"  # pending | running | done | gave_up
    job_id: str | None = None
    submitted_at: float | None = None  # wall clock, so it survives a restart
    attempts: int = 0
    file: str | None = None


@dataclass
class Plan:
    """A persisted bulk export in progress."""

    kind: str  # "bulk" | "reconcile"
    document: str  # name of the queries/ document
    started_at: str  # the export's upper bound B, ISO
    batch_id: str
    base_filter: str  # extra search terms every slice carries ("" = none)
    window_from: str | None
    slices: list[Slice]
    # Partial data of failed jobs, kept aside: landed only for slices that finally give up,
    # because a re-run slice's full data supersedes it (and a partial file's children may
    # be cut short, which must not replace a parent's complete children in the warehouse).
    partial_files: list[dict[str, Any]] = field(default_factory=list)
    # Allocated when the export lands (not when it starts), so that it sorts after any
    # partial batch; persisted before writing, so a crash re-lands under the same id.
    landing_batch_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Rebuild a plan read from the state file."""
        values = dict(data)
        values["slices"] = [Slice(**s) for s in data["slices"]]
        return cls(**values)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def make_slices(start: datetime, end: datetime, count: int) -> list[Slice]:
    """``count`` equal slices from ``start``; the last is open-ended so rows updated during the export count."""
    count = max(1, count)
    step = (end - start) / count
    bounds = [start + step * i for i in range(count)] + [end]
    slices = []
    for i in range(count):
        lo = _iso(bounds[i])
        hi = None if i == count - 1 else _iso(bounds[i + 1])
        slices.append(Slice(key=f"{i:03d}", start=lo, end=hi, nominal_end=_iso(end)))
    # drop zero-width slices produced by rounding to seconds
    return [s for s in slices if s.end is None or s.start is None or s.start < s.end] or slices[-1:]


def slice_filter(piece: Slice, base_filter: str) -> str:
    """The Shopify search string of a slice."""
    terms = [base_filter] if base_filter else []
    if piece.start is not None:
        terms.append(f"updated_at:>='{piece.start}'")
    if piece.end is not None:
        terms.append(f"updated_at:<'{piece.end}'")
    return " AND ".join(terms)


def halve(piece: Slice, min_seconds: float) -> list[Slice] | None:
    """Two halves of a slice, or None when it is unbounded or too short to split."""
    end = piece.end or piece.nominal_end
    if piece.start is None or end is None:
        return None
    lo, hi = _parse(piece.start), _parse(end)
    if (hi - lo).total_seconds() < 2 * max(1.0, min_seconds):
        return None
    mid = _iso(lo + (hi - lo) / 2)
    first = Slice(key=piece.key + "a", start=piece.start, end=mid, nominal_end=mid, attempts=piece.attempts)
    second = Slice(
        key=piece.key + "b", start=mid, end=piece.end, nominal_end=piece.nominal_end, attempts=piece.attempts
    )
    return [first, second]


@dataclass
class ExportOutcome:
    """What a bulk export produced."""

    batches: list[landing.Manifest]
    complete: bool
    warnings: list[str]
    submitted_jobs: int
    resumed: bool


class BulkExport:
    """Runs (or resumes) one persisted export plan to a landing batch."""

    def __init__(
        self,
        client: ShopifyClient,
        *,
        shop: str,
        entity: str,
        landing_root: Path,
        state_dir: Path,
        settings: FetchSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.shop = shop
        self.entity = entity
        self.landing_root = landing_root
        self.state_dir = state_dir
        self.settings = settings
        self.clock = clock
        self.work_dir = state_dir / shop / f"{entity}.bulk-files"
        self.warnings: list[str] = []
        self.batches: list[landing.Manifest] = []
        self.submitted = 0
        self.deferred = 0  # submissions put off because the shop's bulk slots were all taken
        shared = client.shared_dir
        self.slots = BulkSlots(
            state_file(shared, shop, "bulk_slots") if shared is not None else None,
            settings.max_concurrent_jobs,
            # a held slot lapses only well after a healthy poller would have renewed it
            ttl_s=max(600.0, 4 * settings.max_poll_interval_s),
        )

    # persistence -----------------------------------------------------------------------
    def load_plan(self, kind: str) -> Plan | None:
        """The unfinished plan of this kind, if a previous run left one."""
        data = cursors.load_state(self.state_dir, self.shop, self.entity, kind)
        return Plan.from_dict(data) if data else None

    def save_plan(self, plan: Plan) -> None:
        """Persist the plan (after every change of a slice)."""
        cursors.save_state(self.state_dir, self.shop, self.entity, plan.kind, asdict(plan))

    @staticmethod
    def new_plan(
        kind: str,
        document: str,
        started_at: datetime,
        slices: list[Slice],
        base_filter: str,
        window_from: str | None,
    ) -> Plan:
        """A fresh plan; its batch id is fixed now so a resumed run writes the same batch."""
        batch_id = landing.new_batch_id(kind) + "-" + secrets.token_hex(2)
        return Plan(kind, document, _iso(started_at), batch_id, base_filter, window_from, slices)

    # running ---------------------------------------------------------------------------
    def run(self, plan: Plan, *, complete_if_whole: bool = True) -> ExportOutcome:
        """Drive every slice to done (or given up), then land the joined result."""
        resumed = any(s.job_id for s in plan.slices)
        for piece in plan.slices:
            if piece.status == "running" and piece.job_id:
                # a resumed job still runs at Shopify: it keeps its slot
                self.slots.hold(piece.job_id)
        self.save_plan(plan)
        query_doc = documents.load(plan.document)
        interval = self.settings.poll_interval_s
        while True:
            active = [s for s in plan.slices if s.status in ("pending", "running")]
            if not active:
                break
            changed = self._submit_pending(plan, query_doc)
            changed |= self._poll_running(plan)
            if changed:
                self.save_plan(plan)
                interval = self.settings.poll_interval_s
            elif any(s.status in ("pending", "running") for s in plan.slices):
                time.sleep(interval)
                interval = min(self.settings.max_poll_interval_s, interval * 1.5)
        gave_up = [s for s in plan.slices if s.status == "gave_up"]
        complete = complete_if_whole and not gave_up
        if plan.kind == "reconcile" and not complete:
            # the loader reads a reconciliation batch as the full id list: land none rather than a short one
            self._discard(plan)
            self.warnings.append(
                f"{self.entity}: reconciliation incomplete, nothing landed; it runs again next time."
            )
        else:
            self.batches.append(self._land(plan, complete))
        cursors.clear_state(self.state_dir, self.shop, self.entity, plan.kind)
        return ExportOutcome(self.batches, complete, self.warnings, self.submitted, resumed)

    def _submit_pending(self, plan: Plan, query_doc: str) -> bool:
        changed = False
        running = sum(1 for s in plan.slices if s.status == "running")
        for piece in sorted(plan.slices, key=lambda s: s.key):
            if running >= self.settings.max_concurrent_jobs:
                break
            if piece.status != "pending":
                continue
            if piece.end is None and any(
                o is not piece and o.status in ("pending", "running") for o in plan.slices
            ):
                # the open-ended slice goes last: a record updated during the export leaves its
                # old slice for this one, so running it after the others cannot miss it
                continue
            slot = self.slots.take()
            if slot is None:
                # the shop's other exports hold every slot: wait for one of their jobs to finish
                self.deferred += 1
                log.info(
                    "bulk submit of %s/%s deferred: the store's bulk slots are taken", self.shop, self.entity
                )
                break
            query = documents.inline_bulk_query(
                query_doc, {"query": slice_filter(piece, plan.base_filter) or None}
            )
            try:
                piece.job_id = submit(self.client, query)
            except ShopifyQueryError as exc:
                self.slots.give_back(slot)
                limit = any(isinstance(e, dict) and e.get("code") == "LIMIT_REACHED" for e in exc.errors)
                if running or limit:
                    # Shopify's per-shop limit (jobs this machine does not know of hold slots):
                    # wait for a job to finish, then submit
                    self.deferred += 1
                    log.info("bulk submit deferred on %s: %s", self.shop, exc)
                    break
                raise
            except BaseException:
                self.slots.give_back(slot)
                raise
            self.slots.hold(piece.job_id, slot)
            piece.status = "running"
            piece.submitted_at = self.clock()
            self.submitted += 1
            running += 1
            changed = True
            # persist each job id at once: a crash right after must not lead to a resubmission
            self.save_plan(plan)
        return changed

    def _poll_running(self, plan: Plan) -> bool:
        changed = False
        for piece in [s for s in plan.slices if s.status == "running"]:
            assert piece.job_id is not None
            job = status(self.client, piece.job_id)
            if job.status in FINISHED:
                self.slots.give_back(job.id)
            else:
                self.slots.hold(job.id)
            if job.status == "COMPLETED":
                self._complete(piece, job)
                changed = True
            elif job.status == "FAILED":
                self._failed(plan, piece, job)
                changed = True
            elif job.status in ("CANCELED", "EXPIRED"):
                self._retry_slice(plan, piece, f"bulk job {job.status.lower()}", split=False)
                changed = True
            elif (
                job.status in ("CREATED", "RUNNING", "CANCELING")
                and piece.submitted_at is not None
                and self.clock() - piece.submitted_at > self.settings.slice_timeout_s
            ):
                log.info(
                    "bulk job %s on %s ran past %.0f s: cancelling and halving",
                    job.id,
                    self.shop,
                    self.settings.slice_timeout_s,
                )
                cancel(self.client, job.id)
                # the cancelled job may hold Shopify's slot a little longer; LIMIT_REACHED covers that
                self.slots.give_back(job.id)
                self._retry_slice(plan, piece, "ran past the slice time limit", split=True)
                changed = True
        return changed

    def _complete(self, piece: Slice, job: BulkJob) -> None:
        dest = self.work_dir / f"{piece.key}.jsonl"
        if job.url:
            download(job.url, dest, base_url=self.client.base_url, timeout=self.settings.download_timeout_s)
        else:
            # Shopify gives no URL when the export matched nothing
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"")
        piece.file = str(dest)
        piece.status = "done"

    def _failed(self, plan: Plan, piece: Slice, job: BulkJob) -> None:
        # a partial id list is worthless to a reconciliation (every absent id reads as deleted)
        if job.partial_data_url and plan.kind == "bulk":
            partial = self.work_dir / f"{piece.key}.partial-{piece.attempts}.jsonl"
            download(
                job.partial_data_url,
                partial,
                base_url=self.client.base_url,
                timeout=self.settings.download_timeout_s,
            )
            if partial.stat().st_size:
                plan.partial_files.append(
                    {
                        "path": str(partial),
                        "start": piece.start,
                        "end": piece.end or plan.started_at,
                        "job_id": job.id,
                        "error_code": job.error_code,
                        "batch_id": landing.new_batch_id("bulk"),
                    }
                )
            else:
                partial.unlink(missing_ok=True)
        self._retry_slice(plan, piece, f"bulk job failed ({job.error_code or 'no error code'})", split=True)

    def _retry_slice(self, plan: Plan, piece: Slice, why: str, *, split: bool) -> None:
        piece.attempts += 1
        if piece.attempts >= self.settings.max_slice_attempts:
            piece.status = "gave_up"
            self.warnings.append(
                f"{self.entity}: slice {piece.start or 'start'}..{piece.end or 'now'} gave up after "
                f"{piece.attempts} attempts ({why}); the export is incomplete, run the re-sync again later."
            )
            return
        halves = halve(piece, self.settings.min_slice.total_seconds()) if split else None
        if halves:
            index = plan.slices.index(piece)
            plan.slices[index : index + 1] = halves
        else:
            piece.status = "pending"
            piece.job_id = None
            piece.submitted_at = None
        log.info(
            "bulk slice %s of %s/%s: %s; %s",
            piece.key,
            self.shop,
            self.entity,
            why,
            "halved" if halves else "re-run",
        )

    def _discard(self, plan: Plan) -> None:
        for piece in plan.slices:
            if piece.file:
                Path(piece.file).unlink(missing_ok=True)

    def _land_partials(self, plan: Plan) -> None:
        """Land the partial data of ranges that gave up; drop the rest (their re-run covers it)."""
        gave_up = [(s.start or "", s.end or plan.started_at) for s in plan.slices if s.status == "gave_up"]
        for item in plan.partial_files:
            path = Path(item["path"])
            lo, hi = item["start"] or "", item["end"]
            if any(lo < g_hi and g_lo < hi for g_lo, g_hi in gave_up):
                manifest = landing.write_batch(
                    self.landing_root,
                    self.shop,
                    self.entity,
                    "bulk",
                    path,
                    complete=False,
                    window_from=item["start"],
                    window_to=item["end"],
                    extra={"job_id": item["job_id"], "error_code": item["error_code"]},
                    batch_id=item["batch_id"],
                    partial=True,
                )
                self.batches.append(manifest)
            else:
                path.unlink(missing_ok=True)

    def _land(self, plan: Plan, complete: bool) -> landing.Manifest:
        self._land_partials(plan)
        if plan.landing_batch_id is None:
            plan.landing_batch_id = landing.new_batch_id("bulk" if plan.kind == "bulk" else "reconcile")
            self.save_plan(plan)
        done = sorted((s for s in plan.slices if s.status == "done"), key=lambda s: s.key)
        joined = self.work_dir / f"{plan.landing_batch_id}.jsonl"
        joined.parent.mkdir(parents=True, exist_ok=True)
        with open(joined, "wb") as out:
            for piece in done:
                assert piece.file is not None
                with open(piece.file, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        manifest = landing.write_batch(
            self.landing_root,
            self.shop,
            self.entity,
            "bulk" if plan.kind == "bulk" else "reconcile",
            joined,
            complete=complete,
            window_from=plan.window_from,
            window_to=plan.started_at,
            extra={
                "started_at": plan.started_at,
                "slices": len(done),
                "gave_up_slices": [f"{s.start}..{s.end}" for s in plan.slices if s.status == "gave_up"],
            },
            batch_id=plan.landing_batch_id,
        )
        joined.unlink(missing_ok=True)  # only left when the batch already existed
        for piece in done:
            if piece.file:
                Path(piece.file).unlink(missing_ok=True)
        return manifest
