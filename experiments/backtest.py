"""Back-tests: fit each strategy's law on a table's smaller budgets, predict its largest ones."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.core.errors import SpecplanError
from planner.forecast import laws
from planner.forecast.forecast import FIT_STARTS, usable_runs
from planner.run.results import CONFIG_KEYS, sort_strategies


@dataclass
class BacktestResult:
    """How well laws fitted on smaller budgets predicted the largest ones.

    Attributes:
        configs: one row per held-out config: its keys, ``actual`` and ``predicted`` macro
            perplexity, the prediction interval ``lo``/``hi``, ``abs_error``, ``pct_error``,
            ``covered`` and ``status``.
        regimes: one row per regime (``regime_keys`` values) with at least two in-budget
            strategies: predicted and actual order, ``winner_right``, ``ranking_right`` and
            ``regret`` (actual perplexity lost by following the forecast's winner).
        per_strategy: errors per strategy and the budget it held out.
        mae, mape: mean absolute error (perplexity) and mean absolute percentage error.
        coverage: share of held-out configs inside their interval.
        winner_accuracy: share of regimes whose best strategy was predicted right.
        skipped: strategies (or configs) that could not be back-tested, and why.
    """

    configs: pd.DataFrame
    regimes: pd.DataFrame
    per_strategy: pd.DataFrame
    mae: float
    mape: float
    coverage: float
    winner_accuracy: float
    skipped: dict[str, str]

    def to_dict(self) -> dict:
        """A JSON-ready dict (``specplan forecast --backtest --json``)."""
        return {
            "mae": self.mae, "mape": self.mape, "coverage": self.coverage,
            "winner_accuracy": self.winner_accuracy, "skipped": self.skipped,
            "configs": self.configs.to_dict("records"),
            "regimes": self.regimes.to_dict("records"),
            "per_strategy": self.per_strategy.to_dict("records"),
        }


def _macro_prediction(fit: laws.LawFit, config: pd.DataFrame) -> float:
    """The fit's macro perplexity over a config's runs (mean log-perplexity, then exp)."""
    logs = []
    for domain, part in config.groupby("domain", sort=False):
        sizes = {c: part[c].to_numpy(dtype=float) for c in laws.SIZE_COLUMNS}
        logs.append(np.log(fit.predict(domain=str(domain), **sizes)))
    return float(np.exp(np.mean(np.concatenate(logs))))


def _rank_regimes(configs: pd.DataFrame, regime_keys: Sequence[str]) -> pd.DataFrame:
    columns = [*regime_keys, "strategies", "predicted_order", "actual_order", "winner_right",
               "ranking_right", "regret"]
    ok = configs[configs["status"] == "ok"] if len(configs) else configs
    records = []
    for key, group in (ok.groupby(list(regime_keys), sort=True) if len(ok) else []):
        best = group.groupby("strategy")[["actual", "predicted"]].min()
        if len(best) < 2:
            continue
        predicted = best["predicted"].sort_values(kind="stable").index.tolist()
        actual = best["actual"].sort_values(kind="stable").index.tolist()
        records.append({
            **dict(zip(regime_keys, key if isinstance(key, tuple) else (key,))),
            "strategies": len(best), "predicted_order": " < ".join(predicted),
            "actual_order": " < ".join(actual), "winner_right": predicted[0] == actual[0],
            "ranking_right": predicted == actual,
            "regret": float(best.loc[predicted[0], "actual"] - best.loc[actual[0], "actual"]),
        })
    return pd.DataFrame(records, columns=columns)


def backtest(
    results_df: pd.DataFrame,
    *,
    holdout: str = "largest",
    strategies: Sequence[str] | None = None,
    regime_keys: Sequence[str] = ("domain_tokens", "spec_budget_flops"),
    n_boot: int = 30,
    seed: int = 0,
    q: tuple[float, float] = (0.1, 0.9),
) -> BacktestResult:
    """Fit each strategy on its smaller budgets and predict its largest one.

    Per strategy, the held-out runs are those at its largest pretraining budget
    (``pretrain_budget_flops``; for a strategy without pretraining, ``spec_budget_flops``,
    where its broad training happens). The law and its uncertainty are fitted on the rest, and
    each held-out config (its runs over domains) is predicted as a macro perplexity.

    Ranking: within each regime (default: a domain size and specialization budget, the
    study's decision axes besides pretraining), each in-budget strategy (status ``ok``) is
    represented by its best held-out config, as a forecast would pick its best settings; the
    predicted order is compared with the actual one. (In the reference table the in-budget
    strategies share their specialization cost per domain size, so its regimes are the three
    domain sizes.)

    Args:
        results_df: the results table.
        holdout: ``"largest"`` (the only rule so far).
        strategies: which to back-test (default: all with runs).
        regime_keys: results-table columns that define a regime.
        n_boot: bootstrap refits per strategy.
        seed: seed of the fits.
        q: interval quantiles.

    Raises:
        SpecplanError: on an unknown holdout rule or strategy, a table without the needed
            columns, or when no strategy can be back-tested.
    """
    if holdout != "largest":
        raise SpecplanError(f"backtest: holdout={holdout!r}; only 'largest' is supported")
    rows = usable_runs(results_df, "backtest")
    missing = [k for k in regime_keys if k not in rows.columns]
    if missing:
        raise SpecplanError(f"backtest: regime column(s) {missing} are not in the results table")
    have = sort_strategies(rows["strategy"])
    names = list(strategies) if strategies else have
    unknown = [s for s in names if s not in have]
    if unknown:
        raise SpecplanError(f"backtest: no runs of {unknown}; the table has {have}")
    keys = [k for k in (*CONFIG_KEYS, "params_inference") if k in rows.columns]
    records, skipped, per_strategy = [], {}, []
    for name in names:
        own = rows[rows["strategy"] == name].dropna(subset=list(laws.SIZE_COLUMNS))
        axis = ("pretrain_budget_flops" if (own["generic_tokens"] > 0).any()
                else "spec_budget_flops")
        if own.empty or axis not in own.columns:
            skipped[name] = f"no run with all of {list(laws.SIZE_COLUMNS)} and {axis}"
            continue
        values = own[axis].to_numpy(dtype=float)
        held = np.isclose(values, values.max(), rtol=1e-9, atol=0.0)
        if held.all():
            skipped[name] = f"one {axis} value only: nothing smaller to fit on"
            continue
        train = own[~held]
        try:
            fit = laws.fit_law(train, name, n_inits=FIT_STARTS, seed=seed)
            spread = laws.uncertainty(train, name, fit, n_boot=n_boot, seed=seed)
        except SpecplanError as err:
            skipped[name] = str(err)
            continue
        first = len(records)
        for key, config in own[held].groupby(keys, dropna=False, sort=False):
            try:
                point = _macro_prediction(fit, config)
                refits = np.array([_macro_prediction(f, config) for f in spread.fits])
            except SpecplanError as err:
                skipped.setdefault(name, str(err))
                continue
            actual = float(np.exp(np.log(config["ppl_after"].astype(float)).mean()))
            # One distance for the config's runs, as they enter sigma: root mean square.
            decades = float(np.sqrt(np.mean(spread.decades(
                {c: config[c].to_numpy(dtype=float) for c in laws.SIZE_COLUMNS}) ** 2)))
            _, lo, hi = spread.interval(refits, decades, q)
            in_budget = "status" not in config.columns or (config["status"] == "ok").all()
            records.append({
                **dict(zip(keys, key)), "held_out": axis, "n_fit": len(train),
                "actual": actual, "predicted": point, "lo": float(lo), "hi": float(hi),
                "status": "ok" if in_budget else "over-inference-budget",
            })
        mine = pd.DataFrame(records[first:])
        if len(mine):
            error = (mine["predicted"] - mine["actual"]).abs()
            per_strategy.append({
                "strategy": name, "held_out": axis, "budget": float(values.max()),
                "n_fit": len(train), "configs": len(mine), "mae": float(error.mean()),
                "mape": float((100 * error / mine["actual"]).mean()),
            })
    if not records:
        raise SpecplanError(
            "backtest: no strategy could be back-tested ("
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            + "); each strategy needs three or more pretraining budgets (specialization "
            "budgets without pretraining): two to fit its budget term, the largest to predict")
    configs = pd.DataFrame(records)
    configs["abs_error"] = (configs["predicted"] - configs["actual"]).abs()
    configs["pct_error"] = 100 * configs["abs_error"] / configs["actual"]
    configs["covered"] = (configs["lo"] <= configs["actual"]) & (configs["actual"] <= configs["hi"])
    regimes = _rank_regimes(configs, regime_keys)
    return BacktestResult(
        configs=configs, regimes=regimes, per_strategy=pd.DataFrame(per_strategy),
        mae=float(configs["abs_error"].mean()), mape=float(configs["pct_error"].mean()),
        coverage=float(configs["covered"].mean()),
        winner_accuracy=float(regimes["winner_right"].mean()) if len(regimes) else float("nan"),
        skipped=skipped,
    )
