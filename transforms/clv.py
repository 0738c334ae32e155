"""Predictive customer lifetime value: BG/NBD for repeat purchases, Gamma-Gamma for spend.

Models
    * BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive
      a customer buys at a Poisson rate λ ~ Gamma(r, α); after every purchase they drop out
      with probability p ~ Beta(a, b).
    * Gamma-Gamma (Fader & Hardie 2013, "The Gamma-Gamma model of monetary value"): a
      customer's transaction values are Gamma(p, ν) with ν ~ Gamma(q, γ); ``v`` below is γ.

Both are fitted by maximum likelihood with ``scipy.optimize`` on the summed log-likelihood,
written here from the papers, with every parameter log-transformed so the optimiser works
on an unconstrained space. Analytic gradients make a fit over a million customers take a
few dozen likelihood evaluations, each on the distinct (x, t_x, T) rows only.

Conventions (they decide whether published parameters are reproduced):
    * A purchase is a calendar day with at least one transaction; several transactions on
      one day are one purchase whose value is the day's total.
    * ``frequency`` (x) = purchase days after the first; ``recency`` (t_x) = time from the
      first to the last purchase day; ``T`` = time from the first purchase day to the end of
      the observation period (inclusive end date). Times are days divided by the time unit
      (1 for days, 7 for weeks).
    * ``monetary_value`` = mean day total over the repeat purchase days (the first day is
      excluded); Gamma-Gamma is fitted only over customers with x ≥ 1 and a positive mean.
    * CLV over ``horizon_months`` sums, month by month, expected purchases in that month ×
      expected value per purchase, discounted by ``(1 + monthly_discount_rate) ** month``.
      A month is 365.25 / 12 days.

On the public CDNOW sample (2,357 customers, 39 weeks to 1997-09-30, weekly units) the fits
reproduce the published parameters: r = 0.243, α = 4.41, a = 0.793, b = 2.43 (log-likelihood
−9582.4) and p = 6.25, q = 3.74, v = 15.4 (see tests/transforms/test_clv_models.py).

Predictions are statistical estimates and are returned as floats, not ledger money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize, special

from transforms.settings import DAYS_PER_MONTH

# The transaction log the CLV models read: one row per transaction.
TRANSACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String,
    "date": pl.Date,
    "amount": pl.Float64,
}

# The per-customer summary the models are fitted on.
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "customer_id": pl.String,
    "frequency": pl.Int64,
    "recency": pl.Float64,
    "T": pl.Float64,
    "monetary_value": pl.Float64,
    "first_purchase": pl.Date,
    "last_purchase": pl.Date,
}

_LOG_BOUND = 25.0  # log-parameters are kept in [-25, 25]; far outside any sensible fit


class ClvFitError(ValueError):
    """The CLV models cannot be fitted on the data given (a user-facing message)."""


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters: purchase rate Gamma(r, alpha), dropout Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend shape p, and the scale's Gamma(q, v)."""

    p: float
    q: float
    v: float


@dataclass(frozen=True)
class BgNbdFit:
    """A fitted BG/NBD model and how the fit went."""

    params: BgNbdParams
    log_likelihood: float
    customers: int
    time_unit_days: int
    converged: bool
    iterations: int


@dataclass(frozen=True)
class GammaGammaFit:
    """A fitted Gamma-Gamma model and how the fit went."""

    params: GammaGammaParams
    log_likelihood: float
    customers: int
    converged: bool
    iterations: int


# --- summary --------------------------------------------------------------------------------


def customer_summary(
    transactions: pl.DataFrame,
    observation_end: date,
    time_unit_days: int = 7,
) -> pl.DataFrame:
    """Summarise a transaction log into frequency, recency, T and monetary value per customer.

    ``transactions`` has ``customer_id``, ``date`` (Date or Datetime) and ``amount`` (any
    numeric or Decimal). Transactions after ``observation_end`` are ignored; the end date is
    part of the observation period. Returns a frame with ``SUMMARY_SCHEMA`` (``customer_id``
    keeps its input type), one row per customer in unspecified order.
    """
    missing = [c for c in TRANSACTIONS_SCHEMA if c not in transactions.columns]
    if missing:
        raise ClvFitError(f"Transactions are missing the column(s) {', '.join(missing)}.")
    if time_unit_days < 1:
        raise ValueError("time_unit_days must be at least 1")
    unit = float(time_unit_days)
    first_day = pl.col("date") == pl.col("date").min()
    return (
        transactions.lazy()
        .select(
            pl.col("customer_id"),
            pl.col("date").cast(pl.Date),
            pl.col("amount").cast(pl.Float64),
        )
        .filter(pl.col("date") <= pl.lit(observation_end, dtype=pl.Date))
        # One pass per customer: purchase days are the distinct dates, and the first day's
        # total is left out of the repeat spend.
        .group_by("customer_id")
        .agg(
            pl.col("date").n_unique().alias("days"),
            pl.col("date").min().alias("first_purchase"),
            pl.col("date").max().alias("last_purchase"),
            pl.col("amount").sum().alias("total"),
            pl.col("amount").filter(first_day).sum().alias("first_amount"),
        )
        .with_columns(frequency=(pl.col("days") - 1).cast(pl.Int64))
        .select(
            "customer_id",
            "frequency",
            recency=(pl.col("last_purchase") - pl.col("first_purchase")).dt.total_days() / unit,
            T=(pl.lit(observation_end, dtype=pl.Date) - pl.col("first_purchase")).dt.total_days() / unit,
            monetary_value=pl.when(pl.col("frequency") > 0)
            .then((pl.col("total") - pl.col("first_amount")) / pl.col("frequency"))
            .otherwise(0.0),
            first_purchase="first_purchase",
            last_purchase="last_purchase",
        )
        .sort("customer_id")
        .collect()
    )


# --- BG/NBD ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BgNbdData:
    """Distinct (x, t_x, T) rows with weights; x, t_x and T further reduced to their distinct values."""

    weight: np.ndarray
    x: np.ndarray  # per row
    ux: np.ndarray
    x_inv: np.ndarray
    utx: np.ndarray
    tx_inv: np.ndarray
    uT: np.ndarray
    T_inv: np.ndarray
    weight_x: np.ndarray  # total weight per distinct x


def _bgnbd_data(frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> _BgNbdData:
    rows = (
        pl.DataFrame({"x": frequency.astype(np.float64), "tx": recency, "T": T})
        .group_by("x", "tx", "T")
        .len()
        # group_by's row order varies run to run; a fixed order keeps the float sums, and so
        # the optimiser's path, identical for identical input
        .sort("x", "tx", "T")
    )
    x = rows["x"].to_numpy()
    ux, x_inv = np.unique(x, return_inverse=True)
    utx, tx_inv = np.unique(rows["tx"].to_numpy(), return_inverse=True)
    uT, T_inv = np.unique(rows["T"].to_numpy(), return_inverse=True)
    weight = rows["len"].to_numpy().astype(np.float64)
    weight_x = np.bincount(x_inv, weights=weight, minlength=ux.shape[0])
    return _BgNbdData(weight, x, ux, x_inv, utx, tx_inv, uT, T_inv, weight_x)


def _bgnbd_rows(values: np.ndarray, d: _BgNbdData, with_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row log-likelihood and, optionally, its gradient w.r.t. (r, alpha, a, b)."""
    r, alpha, a, b = values
    ux = d.ux
    repeat_u = ux > 0
    # Terms that depend on x only are computed once per distinct x.
    a_u = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha)
    lbeta_ab = special.betaln(a, b)
    b1_u = special.betaln(a, b + ux) - lbeta_ab
    b2_u = np.full_like(ux, -np.inf)
    b2_u[repeat_u] = special.betaln(a + 1, b + ux[repeat_u] - 1) - lbeta_ab
    log_aT_u = np.log(alpha + d.uT)
    log_atx_u = np.log(alpha + d.utx)

    rx = r + d.x
    t1 = b1_u[d.x_inv] - rx * log_aT_u[d.T_inv]
    t2 = b2_u[d.x_inv] - rx * log_atx_u[d.tx_inv]
    lse = np.logaddexp(t1, t2)
    ll = a_u[d.x_inv] + lse
    if not with_grad:
        return ll, None

    s1 = np.exp(t1 - lse)
    s2 = 1.0 - s1
    psi_ab = special.digamma(a + b)
    psi_abx_u = special.digamma(a + b + ux)
    dA_dr_u = special.digamma(r + ux) - special.digamma(r) + np.log(alpha)
    dt1_da_u = psi_ab - psi_abx_u
    dt1_db_u = special.digamma(b + ux) - psi_abx_u - special.digamma(b) + psi_ab
    dt2_da_u = np.zeros_like(ux)
    dt2_db_u = np.zeros_like(ux)
    dt2_da_u[repeat_u] = special.digamma(a + 1) - psi_abx_u[repeat_u] - special.digamma(a) + psi_ab
    dt2_db_u[repeat_u] = (
        special.digamma(b + ux[repeat_u] - 1) - psi_abx_u[repeat_u] - special.digamma(b) + psi_ab
    )
    inv_aT = 1.0 / (alpha + d.uT)
    inv_atx = 1.0 / (alpha + d.utx)

    g = np.empty((4, ll.shape[0]))
    g[0] = dA_dr_u[d.x_inv] - s1 * log_aT_u[d.T_inv] - s2 * log_atx_u[d.tx_inv]
    g[1] = r / alpha - rx * (s1 * inv_aT[d.T_inv] + s2 * inv_atx[d.tx_inv])
    g[2] = s1 * dt1_da_u[d.x_inv] + s2 * dt2_da_u[d.x_inv]
    g[3] = s1 * dt1_db_u[d.x_inv] + s2 * dt2_db_u[d.x_inv]
    return ll, g


def _bgnbd_total(values: np.ndarray, d: _BgNbdData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood and its gradient w.r.t. (r, alpha, a, b).

    The same algebra as ``_bgnbd_rows``, but terms that depend on x only are multiplied by
    per-x sums instead of being spread over the rows; only a handful of row-sized
    operations remain per evaluation.
    """
    r, alpha, a, b = values
    ux = d.ux
    repeat_u = ux > 0
    a_u = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha)
    lbeta_ab = special.betaln(a, b)
    b1_u = special.betaln(a, b + ux) - lbeta_ab
    b2_u = np.full_like(ux, -np.inf)
    b2_u[repeat_u] = special.betaln(a + 1, b + ux[repeat_u] - 1) - lbeta_ab

    rx = r + d.x
    log_aT = np.log(alpha + d.uT)[d.T_inv]
    log_atx = np.log(alpha + d.utx)[d.tx_inv]
    t1 = b1_u[d.x_inv] - rx * log_aT
    t2 = b2_u[d.x_inv] - rx * log_atx
    lse = np.logaddexp(t1, t2)
    # Elementwise sums, not BLAS dot products: on small machines BLAS worker threads
    # spinning between calls cost more than the arithmetic.
    value = float((a_u * d.weight_x).sum() + (d.weight * lse).sum())

    ws1 = d.weight * np.exp(t1 - lse)
    ws2 = d.weight - ws1
    s1_x = np.bincount(d.x_inv, weights=ws1, minlength=ux.shape[0])
    s2_x = d.weight_x - s1_x
    psi_ab = special.digamma(a + b)
    psi_abx_u = special.digamma(a + b + ux)
    dA_dr_u = special.digamma(r + ux) - special.digamma(r) + np.log(alpha)
    dt1_da_u = psi_ab - psi_abx_u
    dt1_db_u = special.digamma(b + ux) - psi_abx_u - special.digamma(b) + psi_ab
    dt2_da_u = np.zeros_like(ux)
    dt2_db_u = np.zeros_like(ux)
    dt2_da_u[repeat_u] = special.digamma(a + 1) - psi_abx_u[repeat_u] - special.digamma(a) + psi_ab
    dt2_db_u[repeat_u] = (
        special.digamma(b + ux[repeat_u] - 1) - psi_abx_u[repeat_u] - special.digamma(b) + psi_ab
    )
    inv_aT = (1.0 / (alpha + d.uT))[d.T_inv]
    inv_atx = (1.0 / (alpha + d.utx))[d.tx_inv]
    grad = np.array(
        [
            (dA_dr_u * d.weight_x).sum() - (ws1 * log_aT + ws2 * log_atx).sum(),
            r / alpha * d.weight_x.sum() - (rx * (ws1 * inv_aT + ws2 * inv_atx)).sum(),
            (dt1_da_u * s1_x + dt2_da_u * s2_x).sum(),
            (dt1_db_u * s1_x + dt2_db_u * s2_x).sum(),
        ]
    )
    return value, grad


def bg_nbd_log_likelihood(
    params: BgNbdParams, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (FHL 2005, eq. 6) of (x, t_x, T) under ``params``."""
    d = _bgnbd_data(np.asarray(frequency), np.asarray(recency, dtype=float), np.asarray(T, dtype=float))
    values = np.array([params.r, params.alpha, params.a, params.b])
    rows, _ = _bgnbd_rows(values, d, with_grad=False)
    # Spread the distinct-row values back onto the customers, in input order.
    keyed = pl.DataFrame({"x": d.x, "tx": d.utx[d.tx_inv], "T": d.uT[d.T_inv], "ll": rows})
    customers = pl.DataFrame(
        {
            "x": np.asarray(frequency, dtype=float),
            "tx": np.asarray(recency, dtype=float),
            "T": np.asarray(T, dtype=float),
        }
    )
    return customers.join(keyed, on=["x", "tx", "T"], how="left", maintain_order="left")["ll"].to_numpy()


_MAX_ITERATIONS = 500
_GRADIENT_TOLERANCE = 1e-6  # on the per-customer mean log-likelihood, w.r.t. log-parameters
# A restart that improves the objective by less than this (relative) has found nothing more.
_STALL_TOLERANCE = 1e-12
# The gradient a stalled stop may keep: on a flat ridge it is rounding noise of the special
# functions at huge arguments, not a direction the likelihood still rises in.
_STALLED_GRADIENT_TOLERANCE = 1e-3


def _minimise(objective: Any, n_params: int, start: np.ndarray | None = None) -> optimize.OptimizeResult:
    """Minimise a (value, gradient) objective over log-parameters with L-BFGS-B.

    L-BFGS-B sometimes stops on a line-search hiccup right at the optimum; it is restarted
    from there, and a stop with a vanishing gradient is accepted as converged. So is a stop
    that a restart cannot improve (by a relative 1e-12) with a gradient below 1e-3: the
    Gamma-Gamma likelihood has such a flat ridge when customers' mean spends differ no more
    than chance explains (q and v run off together, v/q fixed), and every point on it gives
    the same predictions.
    """
    x0 = np.zeros(n_params) if start is None else start
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * n_params
    result: optimize.OptimizeResult | None = None
    iterations = 0
    stalled = False
    for _ in range(3):
        previous = None if result is None else float(result.fun)
        result = optimize.minimize(
            objective,
            x0 if result is None else result.x,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": _MAX_ITERATIONS, "ftol": 1e-15, "gtol": 1e-10},
        )
        iterations += int(result.nit)
        if result.success or result.nit >= _MAX_ITERATIONS:
            break
        if previous is not None and previous - float(result.fun) <= _STALL_TOLERANCE * max(
            1.0, abs(previous)
        ):
            stalled = True
            break
    assert result is not None
    gradient = np.abs(result.jac)
    if not result.success and (
        np.all(gradient < _GRADIENT_TOLERANCE) or (stalled and np.all(gradient < _STALLED_GRADIENT_TOLERANCE))
    ):
        result.success = True
    result.nit = iterations
    return result


def _check_fit(result: optimize.OptimizeResult, model: str, customers: int) -> None:
    """Refuse a fit that did not converge, ran off to a boundary or produced non-finite numbers."""
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun) or result.fun >= 1e299:
        raise ClvFitError(f"The {model} fit on {customers} customers did not reach finite parameters.")
    if not result.success:
        raise ClvFitError(
            f"The {model} fit on {customers} customers did not converge ({result.message}). There may be "
            "too little purchase history to estimate it; use more customers or a longer observation period."
        )
    if np.any(np.abs(result.x) >= _LOG_BOUND - 1e-3):
        raise ClvFitError(
            f"The {model} fit on {customers} customers is degenerate (a parameter ran off to 0 or "
            "infinity): there is too little purchase history to estimate it. Use more customers "
            "or a longer observation period."
        )


def fit_bg_nbd(summary: pl.DataFrame, time_unit_days: int = 7) -> BgNbdFit:
    """Fit BG/NBD by maximum likelihood on a ``customer_summary`` frame.

    ``time_unit_days`` must be the unit the summary was built with; it is recorded on the
    fit so predictions use the same clock. Raises ``ClvFitError`` when there are no
    customers or no repeat buyers (the dropout process cannot be identified without them).
    """
    if summary.height == 0:
        raise ClvFitError("No customers with transactions in the observation period.")
    frequency = summary["frequency"].to_numpy()
    if not (frequency > 0).any():
        raise ClvFitError(
            "No repeat buyers: every customer bought on a single day, so repeat-purchase "
            "behaviour cannot be estimated. Use a longer observation period."
        )
    d = _bgnbd_data(frequency, summary["recency"].to_numpy(), summary["T"].to_numpy())
    total = float(d.weight.sum())

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        values = np.exp(theta)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, g = _bgnbd_total(values, d)
        value = -ll / total
        grad = -g * values / total
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return 1e300, np.zeros_like(theta)
        return value, grad

    result = _minimise(objective, 4)
    _check_fit(result, "BG/NBD", summary.height)
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdFit(
        params=BgNbdParams(r=r, alpha=alpha, a=a, b=b),
        log_likelihood=-float(result.fun) * total,
        customers=summary.height,
        time_unit_days=time_unit_days,
        converged=bool(result.success),
        iterations=int(result.nit),
    )


def _purchases_if_alive(
    params: BgNbdParams, t: float | np.ndarray, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """FHL 2005 eq. 10 without its P(alive) denominator: it depends on (x, T) only, not on t_x."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    t = np.asarray(t, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        ratio = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
        out = (a + b + x - 1) / (a - 1) * (1.0 - ratio * hyp)
    return np.where(t == 0, 0.0, out)


def expected_purchases(
    params: BgNbdParams,
    t: float | np.ndarray,
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
) -> np.ndarray:
    """Expected purchases in the next ``t`` time units given (x, t_x, T) (FHL 2005, eq. 10)."""
    x = np.asarray(frequency, dtype=float)
    T = np.asarray(T, dtype=float)
    return _purchases_if_alive(params, t, x, T) * probability_alive(params, x, recency, T)


def probability_alive(
    params: BgNbdParams, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Probability a customer with history (x, t_x, T) has not dropped out (FHL 2005, eq. 12 note)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = np.asarray(frequency, dtype=float)
    tx = np.asarray(recency, dtype=float)
    T = np.asarray(T, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        )
        p = 1.0 / (1.0 + np.exp(log_odds))
    # Without a repeat purchase there is no evidence of dropout: the customer is alive.
    return np.where(x > 0, p, 1.0)


# --- Gamma-Gamma ----------------------------------------------------------------------------


def _gamma_gamma_rows(
    values: np.ndarray, x: np.ndarray, m: np.ndarray, with_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    p, q, v = values
    px = p * x
    log_vxm = np.log(v + x * m)
    log_m = np.log(m)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * log_m
        + px * np.log(x)
        - (px + q) * log_vxm
    )
    if not with_grad:
        return ll, None
    psi_pxq = special.digamma(px + q)
    g = np.empty((3, ll.shape[0]))
    g[0] = x * (psi_pxq - special.digamma(px) + log_m + np.log(x) - log_vxm)
    g[1] = psi_pxq - special.digamma(q) + np.log(v) - log_vxm
    g[2] = q / v - (px + q) / (v + x * m)
    return ll, g


@dataclass(frozen=True)
class _GammaGammaData:
    """Per-customer x and x·z̄, with the sums over customers that the likelihood needs per distinct x."""

    x: np.ndarray
    xm: np.ndarray
    ux: np.ndarray
    n_x: np.ndarray  # customers per distinct x
    log_m_x: np.ndarray  # sum of log z̄ per distinct x


def _gamma_gamma_data(x: np.ndarray, m: np.ndarray) -> _GammaGammaData:
    ux, inv = np.unique(x, return_inverse=True)
    return _GammaGammaData(
        x=x,
        xm=x * m,
        ux=ux,
        n_x=np.bincount(inv, minlength=ux.shape[0]).astype(np.float64),
        log_m_x=np.bincount(inv, weights=np.log(m), minlength=ux.shape[0]),
    )


def _gamma_gamma_total(values: np.ndarray, d: _GammaGammaData) -> tuple[float, np.ndarray]:
    """Total Gamma-Gamma log-likelihood and gradient w.r.t. (p, q, v); special functions per distinct x."""
    p, q, v = values
    pux = p * d.ux
    log_vxm = np.log(v + d.xm)
    inv_vxm = 1.0 / (v + d.xm)
    sum_l, sum_xl = log_vxm.sum(), (d.x * log_vxm).sum()
    sum_r, sum_xr = inv_vxm.sum(), (d.x * inv_vxm).sum()
    n = d.n_x.sum()
    per_x = special.gammaln(pux + q) - special.gammaln(pux) + pux * np.log(d.ux)
    value = (d.n_x * per_x).sum() + n * (q * np.log(v) - special.gammaln(q))
    value += ((pux - 1) * d.log_m_x).sum() - p * sum_xl - q * sum_l
    psi_pxq = special.digamma(pux + q)
    grad = np.array(
        [
            (d.n_x * d.ux * (psi_pxq - special.digamma(pux) + np.log(d.ux))).sum()
            + (d.ux * d.log_m_x).sum()
            - sum_xl,
            (d.n_x * psi_pxq).sum() + n * (np.log(v) - special.digamma(q)) - sum_l,
            n * q / v - p * sum_xr - q * sum_r,
        ]
    )
    return float(value), grad


def fit_gamma_gamma(summary: pl.DataFrame) -> GammaGammaFit:
    """Fit Gamma-Gamma by maximum likelihood over customers with ≥ 1 repeat purchase.

    Only customers with ``frequency > 0`` and a positive ``monetary_value`` inform the fit
    (a repeat buyer's mean repeat spend is the model's observation). Raises ``ClvFitError``
    when there are none.
    """
    repeaters = summary.filter((pl.col("frequency") > 0) & (pl.col("monetary_value") > 0))
    if repeaters.height == 0:
        raise ClvFitError(
            "No repeat buyers with a positive spend: the spend model needs customers who bought "
            "on more than one day."
        )
    x = repeaters["frequency"].to_numpy().astype(np.float64)
    m = repeaters["monetary_value"].to_numpy()
    data = _gamma_gamma_data(x, m)
    total = float(x.shape[0])

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        values = np.exp(theta)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, g = _gamma_gamma_total(values, data)
        value = -ll / total
        grad = -g * values / total
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return 1e300, np.zeros_like(theta)
        return value, grad

    # Start the scale near the data: a mean spend of ~p*v/(q-1) around the observed one.
    start = np.log(np.array([1.0, 2.0, max(float(np.mean(m)), 1e-6)]))
    result = _minimise(objective, 3, start=start)
    _check_fit(result, "Gamma-Gamma", repeaters.height)
    p, q, v = (float(val) for val in np.exp(result.x))
    return GammaGammaFit(
        params=GammaGammaParams(p=p, q=q, v=v),
        log_likelihood=-float(result.fun) * total,
        customers=repeaters.height,
        converged=bool(result.success),
        iterations=int(result.nit),
    )


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, frequency: np.ndarray, monetary: np.ndarray
) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean repeat spend (x ≥ 1, spend > 0)."""
    values = np.array([params.p, params.q, params.v])
    ll, _ = _gamma_gamma_rows(
        values, np.asarray(frequency, dtype=float), np.asarray(monetary, dtype=float), False
    )
    return ll


def expected_average_value(
    params: GammaGammaParams, frequency: np.ndarray, monetary: np.ndarray
) -> np.ndarray:
    """Expected value of a customer's future purchase, E(Z | x, z̄) (Fader & Hardie 2013, eq. 5).

    Customers without a repeat purchase get the population mean ``p v / (q - 1)``.
    """
    p, q, v = params.p, params.q, params.v
    x = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    conditional = p * (v + x * m) / (p * x + q - 1)
    population = p * v / (q - 1) if q > 1 else np.nan
    return np.where(x > 0, conditional, population)


# --- predictions ----------------------------------------------------------------------------


def predict_clv(
    summary: pl.DataFrame,
    bg_nbd: BgNbdFit,
    gamma_gamma: GammaGammaFit,
    horizon_months: int = 12,
    monthly_discount_rate: float = 0.01,
) -> pl.DataFrame:
    """Per-customer predictions over ``horizon_months``.

    Returns ``customer_id, frequency, recency, T, monetary_value``, then
    ``expected_purchases_<h>m`` (undiscounted), ``p_alive``, ``predicted_average_value`` and
    ``clv_<h>m`` (discounted monthly), where ``<h>`` is ``horizon_months``.
    """
    if horizon_months < 1:
        raise ValueError("horizon_months must be at least 1")
    month = DAYS_PER_MONTH / bg_nbd.time_unit_days
    # E[Y(t)] = P(alive | x, t_x, T) × g(t; x, T): the costly hypergeometric part g is
    # computed once per distinct (x, T) and month, then spread over the customers.
    pairs = summary.select("frequency", "T").unique()
    xp = pairs["frequency"].to_numpy().astype(np.float64)
    Tp = pairs["T"].to_numpy()
    cumulative = np.stack(
        [_purchases_if_alive(bg_nbd.params, month * i, xp, Tp) for i in range(horizon_months + 1)]
    )
    per_month = np.diff(cumulative, axis=0)
    discount = (1.0 + monthly_discount_rate) ** -np.arange(1, horizon_months + 1, dtype=float)
    pairs = pairs.with_columns(
        pl.Series("_if_alive", cumulative[-1]),
        pl.Series("_discounted_if_alive", (discount[:, None] * per_month).sum(axis=0)),
    )
    rows = summary.select("customer_id", "frequency", "recency", "T", "monetary_value").join(
        pairs, on=["frequency", "T"], how="left", maintain_order="left"
    )
    x = rows["frequency"].to_numpy().astype(np.float64)
    p_alive = probability_alive(bg_nbd.params, x, rows["recency"].to_numpy(), rows["T"].to_numpy())
    value = expected_average_value(gamma_gamma.params, x, rows["monetary_value"].to_numpy())
    return rows.select(
        "customer_id",
        "frequency",
        "recency",
        "T",
        "monetary_value",
        pl.Series(f"expected_purchases_{horizon_months}m", p_alive * rows["_if_alive"].to_numpy()),
        pl.Series("p_alive", p_alive),
        pl.Series("predicted_average_value", value),
        pl.Series(f"clv_{horizon_months}m", p_alive * rows["_discounted_if_alive"].to_numpy() * value),
    )


@dataclass(frozen=True)
class ClvResult:
    """Both fitted models and the per-customer predictions."""

    bg_nbd: BgNbdFit
    gamma_gamma: GammaGammaFit
    predictions: pl.DataFrame


def fit_and_predict_clv(
    transactions: pl.DataFrame,
    observation_end: date | datetime,
    time_unit_days: int = 7,
    horizon_months: int = 12,
    monthly_discount_rate: float = 0.01,
) -> ClvResult:
    """Summarise ``transactions`` up to ``observation_end``, fit both models and predict.

    The one call the pipeline and the CLI make. Raises ``ClvFitError`` with a user-facing
    message when the data cannot support a fit.
    """
    end = observation_end.date() if isinstance(observation_end, datetime) else observation_end
    summary = customer_summary(transactions, end, time_unit_days)
    bg = fit_bg_nbd(summary, time_unit_days)
    gg = fit_gamma_gamma(summary)
    predictions = predict_clv(summary, bg, gg, horizon_months, monthly_discount_rate)
    return ClvResult(bg_nbd=bg, gamma_gamma=gg, predictions=predictions)
