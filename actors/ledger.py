"""The Ledger: what every attempt cost, per run, agent, tier, topology and model; budgets.

One named actor per cluster (:func:`get_ledger`). It is an ordinary class, made an actor where
it is created, so its logic is tested by calling it directly. Its promises:

- **Exact.** Each attempt is priced from the one price table (``actors/tiers.toml``) as a
  ``Decimal``: uncached input, output, 5-minute and 1-hour cache writes and cache reads apart,
  the batch discount for Message Batches, nothing for response-cache hits.
- **Idempotent.** Records are keyed by ``(call_id, attempt)``; a duplicate (a client's retry, a
  zombie's replay after a node failure, Ray re-running ``record`` after a restart) is
  acknowledged and ignored. The journal's primary key decides, so two Ledger processes
  writing one file (a zombie and its successor) still count an attempt once.
- **Durable.** A record is acknowledged only once its journal transaction has committed, and a
  restarted Ledger reloads the journal in ``__init__``: nothing acknowledged is lost.
- **Budgets never overspent.** Before each attempt the caller reserves its worst-case cost;
  the check and the reservation happen with no ``await`` between them, so concurrent callers
  cannot both pass a check that only one fits (BerriAI/litellm#34732's check-then-record race).
  Reservations are journaled, so a Ledger restart does not forget money in flight, and expire
  after a TTL, so a dead caller does not lock a budget forever. Near the cap a caller may
  wait for the reservations in flight to settle (``reserve(wait_s=...)``) instead of being
  refused while the spend itself still leaves room.

Set-up shared by the examples below:

    >>> ledger = get_ledger(data_dir=Path(".raytroupe"))
    >>> await ledger.set_budget.remote("r1", Decimal("2.00"))
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, TypeAdapter
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.errors import BudgetExceeded, UsageError
from actors.ledger_journal import (
    JOURNAL_NAME,
    JournalEntry,
    JournalWrite,
    LedgerJournal,
    Reservation,
)
from actors.ledger_metrics import ledger_metrics
from actors.ledger_rollup import (
    Rollup,
    RollupBy,
    check_rollup_by,
    empty_rollup,
    is_billed,
    read_rollups,
)
from actors.messages import CallRecord
from actors.tiers import ModelSpec, PriceTable, load_price_table

LEDGER_NAME = "ledger"
"""The Ledger actor's name in its namespace."""
DEFAULT_RESERVATION_TTL_S = 600.0
"""How long a reservation outlives a silent caller: far longer than any one API attempt."""
_MAX_WAITING = 500
"""Most reservations waiting at once; more are decided at once. Each waiter holds one of the
actor's 1,000 concurrent calls, and the records that would make room need some too."""
_MAX_WITHDRAWN = 10_000
"""Withdrawn attempts remembered at most (a release that finds nothing to drop is kept)."""

_records = TypeAdapter(list[CallRecord])
_log = logging.getLogger(__name__)


class BudgetStatus(BaseModel):
    """A run's budget as the Ledger sees it now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["budget"] = "budget"
    run_id: str
    cap_usd: Decimal | None
    """The run's ``max_cost_usd``; None when it has no cap."""
    spent_usd: Decimal
    """Cost of the run's recorded attempts."""
    reserved_usd: Decimal
    """Worst-case cost of the run's attempts in flight."""
    reservations: int
    """Attempts in flight holding a reservation."""


class LedgerStats(BaseModel):
    """Counters of this Ledger process, for diagnosis (zombie replays show as duplicates)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ledger_stats"] = "ledger_stats"
    record_batches: int
    """``record`` calls served since this process started."""
    records: int
    """Records received, duplicates included."""
    duplicates: int
    """Records ignored because their ``(call_id, attempt)`` was already journaled."""
    budget_refusals: int
    """Reservations refused with ``BudgetExceeded``."""
    journaled_at_start: int
    """Attempts the journal held when this process loaded it."""


class Ledger:
    """Records every attempt, answers roll-ups, and holds runs to their budgets.

    Args:
        data_dir: Where the journal lives (``data_dir/ledger.sqlite``).
        price_table: A loaded table, a TOML file merged over the shipped one, or None for the
            shipped table.
        reservation_ttl_s: Seconds after which an unreleased reservation is presumed orphaned.
        clock: Unix time source for reservation expiry (tests pass a fake one).
    """

    def __init__(self, data_dir: str | Path, price_table: PriceTable | str | Path | None = None,
                 *, reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(price_table, PriceTable):
            price_table = load_price_table(price_table)
        self._prices = price_table
        self._ttl, self._clock = reservation_ttl_s, clock
        self._journal = LedgerJournal(Path(data_dir) / JOURNAL_NAME)
        state = self._journal.load(now=clock())
        self._spent: dict[str, Decimal] = dict(state.spent)
        self._caps: dict[str, Decimal] = dict(state.budgets)
        self._held: dict[str, dict[tuple[str, int], Reservation]] = {}
        for res in state.reservations:
            self._held.setdefault(res.run_id, {})[(res.call_id, res.attempt)] = res
        self._metrics = ledger_metrics()
        self._counts = dict.fromkeys(("record_batches", "records", "duplicates",
                                      "budget_refusals"), 0)
        self._counts["journaled_at_start"] = state.entries
        self._unpriced: set[str] = set()
        self._settled = asyncio.Condition()
        """Notified when room may have appeared under a cap (records, releases, budgets)."""
        self._withdrawn: dict[tuple[str, int], float] = {}
        self._waiting = 0
        """Attempts released before their reservation was granted (their caller gave up)."""

    def __repr__(self) -> str:
        if "_held" not in vars(self):
            # Ray reprs the actor to report a failed __init__; raising here would crash the
            # worker instead, and Ray would restart the Ledger into the same failure forever.
            return "Ledger(not started)"
        held = sum(len(h) for h in self._held.values())
        return (f"Ledger(journal={str(self._journal.path)!r}, runs={len(self._spent)}, "
                f"budgets={len(self._caps)}, reservations={held})")

    async def record(self, records: Sequence[CallRecord]) -> int:
        """Journal a batch of attempts; release their reservations; ignore duplicates.

        Returns once the batch is durable. Safe to repeat: a record already journaled is
        acknowledged again and counted once.

        Returns:
            How many records were new.

        Example:
            >>> await ledger.record.remote([record])
            1
        """
        checked = _records.validate_python(list(records))
        entries = tuple(self._priced(r) for r in checked)
        inserted = await self._journal.write(JournalWrite(entries=entries))
        for entry, is_new in zip(entries, inserted, strict=True):
            record = entry.record
            self._held.get(record.run_id, {}).pop((record.call_id, record.attempt), None)
            if is_new:
                self._spent[record.run_id] = self._spent.get(record.run_id, Decimal(0)) \
                    + entry.cost_usd
        self._metrics.observe_batch(e for e, is_new in zip(entries, inserted, strict=True)
                                    if is_new)
        new = sum(inserted)
        self._counts["record_batches"] += 1
        self._counts["records"] += len(entries)
        self._counts["duplicates"] += len(entries) - new
        if new < len(entries):
            _log.info("ledger: ignored %d duplicate record(s)", len(entries) - new)
        await self._changed()  # the records' reservations shrank to their real cost
        return new

    async def reserve(self, run_id: str, call_id: str, attempt: int,
                      worst_case_usd: Decimal, ttl_s: float | None = None,
                      wait_s: float = 0.0) -> None:
        """Hold ``worst_case_usd`` of the run's budget for one attempt, or refuse it.

        A run without a cap holds nothing (there is nothing to protect). Repeating a
        reservation that is already held is a no-op: Ray replays it after a restart.

        Near the cap, the room may be held by other attempts' worst cases, which shrink to
        their real cost (often a quarter of it) when their records land. With ``wait_s``, the
        attempt waits up to that long for them to settle instead of being refused, so a run
        stops when its *spend* leaves no room, not when its reservations do (issue 12, D14b).
        It is refused at once when the spend alone leaves no room, or nothing is held.

        Args:
            run_id: The run whose budget pays.
            call_id: The logical call.
            attempt: The attempt number; its record releases the reservation.
            worst_case_usd: The most the attempt can cost.
            ttl_s: How long to hold it if no record comes (default: the Ledger's TTL). Pass
                more for an attempt that may outlast it, such as a very long stream.
            wait_s: Most seconds to wait for held reservations to settle (0: decide now).

        Raises:
            BudgetExceeded: spent + reserved + ``worst_case_usd`` would pass the run's cap
                (after waiting, if asked, or withdrawn by :meth:`release` while it waited);
                nothing was reserved.
            UsageError: ``worst_case_usd`` is negative or not a number.

        Example:
            >>> await ledger.reserve.remote("r1", "call-7", 0, Decimal("0.0150"))
        """
        worst = _usd(worst_case_usd, "worst_case_usd")
        key = (call_id, attempt)
        deadline = time.monotonic() + max(wait_s, 0.0)
        while (cap := self._caps.get(run_id)) is not None:
            held = self._live_reservations(run_id)
            if key in held:
                return
            withdrawn = self._withdrawn.pop(key, None) is not None
            spent = self._spent.get(run_id, Decimal(0))
            committed = spent + sum(r.amount_usd for r in held.values())
            if committed + worst <= cap and not withdrawn:
                await self._hold(held, Reservation(
                    run_id=run_id, call_id=call_id, attempt=attempt, amount_usd=worst,
                    expires_at=self._clock() + (ttl_s or self._ttl)))
                return
            left = deadline - time.monotonic()
            if spent + worst > cap or left <= 0 or withdrawn or self._waiting >= _MAX_WAITING:
                self._counts["budget_refusals"] += 1
                self._metrics.refused(run_id)
                raise BudgetExceeded(run_id, cap, committed, worst)
            await self._settling(left, held)

    async def _hold(self, held: dict[tuple[str, int], Reservation], res: Reservation) -> None:
        """Hold ``res`` in memory before the first await (the next reserver already sees it),
        then journal it."""
        key = (res.call_id, res.attempt)
        held[key] = res
        try:
            await self._journal.write(JournalWrite(reserve=(res,)))
        except BaseException:
            if held.get(key) is res:
                del held[key]
            raise

    async def _settling(self, left_s: float,
                        held: dict[tuple[str, int], Reservation]) -> None:
        """Wait until a record, release or budget change may have made room, an expiry is
        due, or ``left_s`` is up."""
        expiry = min(r.expires_at for r in held.values()) - self._clock() if held else left_s
        self._waiting += 1
        try:
            async with self._settled:
                await asyncio.wait_for(self._settled.wait(), max(min(left_s, expiry), 0.001))
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1

    async def _changed(self) -> None:
        """Wake the reservations waiting for room (:meth:`_settling`)."""
        async with self._settled:
            self._settled.notify_all()

    async def release(self, run_id: str, call_id: str, attempt: int) -> None:
        """Drop an attempt's reservation without a record (the attempt was never sent).

        A reservation still waiting for room (:meth:`reserve` with ``wait_s``) is withdrawn:
        its caller gave up on it, so it must not be granted later.

        Example:
            >>> await ledger.release.remote("r1", "call-7", 0)
        """
        if self._held.get(run_id, {}).pop((call_id, attempt), None) is not None:
            await self._journal.write(JournalWrite(release=((call_id, attempt),)))
            await self._changed()
            return
        self._withdrawn[(call_id, attempt)] = self._clock()
        if len(self._withdrawn) > _MAX_WITHDRAWN:  # releases of reservations never made
            for old in list(self._withdrawn)[:_MAX_WITHDRAWN // 2]:
                del self._withdrawn[old]
        await self._changed()

    async def set_budget(self, run_id: str, cap_usd: Decimal | None) -> None:
        """Set (or with None, remove) the run's ``max_cost_usd``; journaled before returning.

        Example:
            >>> await ledger.set_budget.remote("r1", Decimal("2.00"))
        """
        cap = None if cap_usd is None else _usd(cap_usd, "cap_usd")
        previous = self._caps.get(run_id)
        if cap is None:
            self._caps.pop(run_id, None)
        else:
            self._caps[run_id] = cap
        try:
            await self._journal.write(JournalWrite(budgets=((run_id, cap),)))
        except BaseException:
            if previous is None:
                self._caps.pop(run_id, None)
            else:
                self._caps[run_id] = previous
            raise
        await self._changed()

    async def budget(self, run_id: str) -> BudgetStatus:
        """The run's cap, spend and reservations now.

        Example:
            >>> (await ledger.budget.remote("r1")).spent_usd
            Decimal('0.0310')
        """
        held = self._live_reservations(run_id)
        return BudgetStatus(run_id=run_id, cap_usd=self._caps.get(run_id),
                            spent_usd=self._spent.get(run_id, Decimal(0)),
                            reserved_usd=sum((r.amount_usd for r in held.values()), Decimal(0)),
                            reservations=len(held))

    async def rollup(self, run_id: str | None = None, by: RollupBy = "run") -> list[Rollup]:
        """Totals grouped by ``by`` over one run's attempts (or every run's), oldest first.

        Reads the journal in a thread, so it reflects every acknowledged record.

        Raises:
            UsageError: ``by`` is not one of run, agent, tier, topology, model.

        Example:
            >>> [r.key for r in await ledger.rollup.remote(run_id="r1", by="agent")]
            ['r1/research/lead', 'r1/research/worker-0']
        """
        by = check_rollup_by(by)
        return await asyncio.to_thread(read_rollups, self._journal.path, run_id, by,
                                       self._prices)

    async def totals(self, run_id: str) -> Rollup:
        """One run's totals (all zero for a run with no attempt).

        Example:
            >>> (await ledger.totals.remote("r1")).cost_usd
            Decimal('0.0310')
        """
        rolled = await self.rollup(run_id, "run")
        return rolled[0] if rolled else empty_rollup("run", run_id)

    async def runs(self) -> list[Rollup]:
        """Totals of every run, oldest first.

        Example:
            >>> [r.key for r in await ledger.runs.remote()]
            ['r1', 'r2']
        """
        return await self.rollup(None, "run")

    async def stats(self) -> LedgerStats:
        """This process's counters (batches served, duplicates ignored, refusals)."""
        return LedgerStats(**self._counts)

    async def journal_path(self) -> str:
        """The journal file this Ledger writes (a path on its node), for readers such as
        ``raytroupe run --report``: a driver's own data dir may not be the one the cluster's
        Ledger was created with."""
        return str(self._journal.path)

    async def close(self) -> None:
        """Commit what is queued and stop the journal's writer thread."""
        await asyncio.to_thread(self._journal.close)

    def _live_reservations(self, run_id: str) -> dict[tuple[str, int], Reservation]:
        """The run's reservations, with expired ones dropped (their callers are gone)."""
        held = self._held.setdefault(run_id, {})
        now = self._clock()
        for key in [k for k, r in held.items() if r.expires_at <= now]:
            del held[key]
        return held

    def _priced(self, record: CallRecord) -> JournalEntry:
        cost = Decimal(0)
        if is_billed(record.source, record.status):
            discount = self._prices.batch_discount if record.source == "batch" else None
            usage = record.usage
            cost = self._spec(record).cost_usd(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cache_write_5m=usage.cache_write_5m, cache_write_1h=usage.cache_write_1h,
                cache_read=usage.cache_read, batch_discount=discount)
        # Built without re-validating: the record was validated where it was made and again
        # at this actor's edge (``record``), and the cost is ours.
        return JournalEntry.model_construct(record=record, cost_usd=cost,
                                            recorded_at=time.time())

    def _spec(self, record: CallRecord) -> ModelSpec:
        """The record's model prices; an unknown model is priced as its tier's default model.

        The Agent prices its reservation from the same table, so an unknown model cannot
        normally reach here; refusing the record would lose spend, so it is kept and logged.
        """
        try:
            return self._prices.spec(record.model)
        except KeyError:
            if record.model not in self._unpriced:
                self._unpriced.add(record.model)
                _log.warning("ledger: model %r has no prices; billing it as tier %r",
                             record.model, record.tier)
            return self._prices.spec(record.tier)


def _usd(value: Any, name: str) -> Decimal:
    """An amount in USD as a ``Decimal`` (floats go through ``str``, so 0.1 stays 0.1)."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise UsageError(f"{name} must be an amount in USD, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise UsageError(f"{name} must be a finite amount >= 0 USD, got {value!r}")
    return amount


def get_ledger(data_dir: Path = Path(".raytroupe"),
               price_table: PriceTable | str | Path | None = None,
               namespace: str = "raytroupe", *,
               reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
               detached: bool = False) -> Any:
    """Return the cluster's Ledger actor, creating it if it does not exist yet.

    Every caller (driver, agents on any node) gets the same actor: it is the named singleton
    ``ledger`` in ``namespace``. It uses no CPU slot, restarts forever (its methods are
    idempotent, so Ray may replay them), and is soft-pinned to the head node, where a worker
    node's death cannot take it down. If it already exists, the arguments are ignored.

    Args:
        data_dir: Directory of the journal, resolved here so that the actor's working
            directory does not matter. On a multi-node cluster it is a path on the head node.
        price_table: Passed to :class:`Ledger`.
        namespace: The Ray namespace of the singleton.
        reservation_ttl_s: Passed to :class:`Ledger`.
        detached: Let the Ledger outlive the driver that created it (long-lived clusters);
            by default it ends with that driver's job.

    Returns:
        The actor handle.

    Example:
        >>> ledger = get_ledger(data_dir=Path(".raytroupe"))
        >>> await ledger.totals.remote("r1")
    """
    options: dict[str, Any] = dict(
        name=LEDGER_NAME, namespace=namespace, get_if_exists=True, num_cpus=0,
        max_restarts=-1, max_task_retries=-1, max_concurrency=1000,
        scheduling_strategy=_soft_pin_to_head(),
    )
    if detached:
        options["lifetime"] = "detached"
    directory = str(Path(data_dir).expanduser().resolve())
    return ray.remote(Ledger).options(**options).remote(
        directory, price_table, reservation_ttl_s=reservation_ttl_s)


def _soft_pin_to_head() -> NodeAffinitySchedulingStrategy | Literal["DEFAULT"]:
    """Prefer the head node; ``soft`` lets Ray place it elsewhere if the head cannot host it."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=True)
    return "DEFAULT"
