"""Does a sweep agree with the reference study? One check per published conclusion.

Each check is a pure function of the results table (the schema of :mod:`experiments.frontier`)
and answers with ``agrees`` (True, False, or None when the sweep did not measure what the
conclusion needs) and the numbers behind the answer, so a report can print them verbatim. The
conclusions are arXiv 2402.01093 v2's (Grangier et al.): §4, Tables 4, 8, Figs. 1, 5, 6. Costs are
compared as the study does: pretraining is shared, specialization is paid per domain, total cost
for N domains is ``generic + N * spec`` (Eq. 1).

Checks compare strategies on *matched cells*: the same domain size, pretraining budget and
specialization budget (a budget is what the user can spend, so equal budgets are equal cost).
Within a cell a strategy is represented by its best config (settings), as the study reports the
best run of each method.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from experiments import frontier
from planner.core.budgets import Budgets, InferenceCap, total_cost
from planner.core.errors import SpecplanError
from planner.core.reference import reference_guidance
from planner.core.units import format_count
from strategies import family_of, strategies_with

__all__ = ["QUALITY_TOLERANCE", "check_conclusions", "guided_strategy", "regimes"]

#: Relative perplexity slack within which configs count as equally good when pricing N domains.
QUALITY_TOLERANCE = 0.05

_NEEDED = ("strategy", "domain", "domain_tokens", "ppl_after", "status", "pretrain_budget_flops",
           "spec_budget_flops", "generic_flops", "spec_flops")
_CELL = ["domain_tokens", "pretrain_budget_flops", "spec_budget_flops"]
_ALL = ("ok", "over-inference-budget")


def guided_strategy(pretrain_flops: float, spec_flops: float, n_domains: int,
                    large_allowed: bool) -> str:
    """The reference study's recommendation for one budget regime (v2 Fig. 1).

    Delegates to the planner's rule (:func:`planner.search.plan.reference_guidance`) so the planner
    and the reports never disagree: the large model when the inference budget admits it; otherwise
    importance sampling when the specialization spend over the domains reaches the pretraining
    budget, and projected networks / mixtures when pretraining dominates.
    """

    cap = InferenceCap() if large_allowed else InferenceCap(params=0)
    budgets = Budgets(pretrain_flops, spec_flops, cap, domains_count=n_domains)
    return reference_guidance(budgets, large_params=1, large_flops=1.0)


def _family(guided: str) -> list[str]:
    """The strategies that carry out a recommendation: its family (pn stands for the experts:
    pn, mix and hn)."""
    return strategies_with(family=family_of(guided))


# The roles the conclusions compare, by trait: a new strategy of a family joins its checks.
def _small() -> list[str]:
    return strategies_with(family="small")


def _no_pretraining() -> list[str]:
    return strategies_with(family="no-pretraining")


def _large() -> list[str]:
    return strategies_with(deploys_large=True)


def _importance() -> list[str]:
    return strategies_with(family="importance-sampling")


def _experts() -> list[str]:
    """Methods that pretrain cluster experts and specialize one (the study's recommendation
    for many domains: projected networks or hard mixtures, and the hyper-network, notes §2.7)."""
    return strategies_with(family="experts")


def _distillation() -> list[str]:
    return strategies_with(family="distillation")


def _matches(guided: str, winner: str, ran: set[str]) -> bool | None:
    """Whether the winner follows the recommendation; None when the sweep never ran it."""
    if not ran & set(_family(guided)):
        return None
    return winner in _family(guided)


def _large_allowed(df: pd.DataFrame) -> bool:
    """Whether the sweep ran the large model within the inference budget (status ``ok``)."""
    llm = df[df["strategy"].isin(_large())]
    return bool(len(llm)) and bool((llm["status"] == "ok").any())


def domains_priced(df: pd.DataFrame, configs: pd.DataFrame) -> int:
    """N of the study's guidance: what the runs were priced for (a plan's ``--domains-count``,
    in its rows), else the number of domains they ran on (older tables, sweeps)."""
    if "domains_count" in df.columns and df["domains_count"].notna().any():
        return int(df["domains_count"].max())
    return int(configs["n_domains"].max())


def regimes(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain size and (pretraining, specialization) budget cell: who wins and by how much.

    The winner comes from :func:`experiments.frontier.winner_map` (budgets are ceilings, runs
    within the inference budget only); the runner-up is the best *other* strategy fitting the
    same cell, and ``margin`` is its perplexity over the winner's minus one. ``guided`` is the
    study's recommendation for the regime and ``agrees`` whether the winner is it (a mixture or
    hyper-network counts for the projected-network recommendation).

    Returns:
        Columns ``domain_tokens``, ``pretrain_budget_flops``, ``spec_budget_flops``,
        ``strategy``, ``ppl_after``, ``runner_up``, ``runner_up_ppl``, ``margin``, ``guided``,
        ``agrees`` (None where the sweep did not run the recommended method); empty when no
        run finished within the inference budget.
    """
    cells = frontier.winner_map(df).dropna(subset=["strategy"])
    columns = [*_CELL, "strategy", "ppl_after", "runner_up", "runner_up_ppl", "margin", "guided",
               "agrees"]
    if cells.empty:
        return pd.DataFrame(columns=columns)
    configs = frontier.config_table(df)
    n_domains = domains_priced(df, configs)
    large = _large_allowed(df)
    ran = set(configs["strategy"])
    records = []
    for _, cell in cells.iterrows():
        fits = configs[(configs["domain_tokens"] == cell["domain_tokens"])
                       & (configs["pretrain_budget_flops"] <= cell["pretrain_budget_flops"])
                       & (configs["spec_budget_flops"] <= cell["spec_budget_flops"])
                       & (configs["strategy"] != cell["strategy"])]
        runner = fits.sort_values("ppl_after", kind="stable").head(1)
        runner_ppl = float(runner["ppl_after"].iloc[0]) if len(runner) else math.nan
        guided = guided_strategy(cell["pretrain_budget_flops"], cell["spec_budget_flops"],
                                 n_domains, large)
        records.append({
            **{k: cell[k] for k in _CELL}, "strategy": cell["strategy"],
            "ppl_after": cell["ppl_after"],
            "runner_up": runner["strategy"].iloc[0] if len(runner) else None,
            "runner_up_ppl": runner_ppl, "margin": runner_ppl / cell["ppl_after"] - 1,
            "guided": guided, "agrees": _matches(guided, cell["strategy"], ran),
        })
    return pd.DataFrame(records, columns=columns)


# -- helpers ------------------------------------------------------------------------------------
def _best_per_cell(configs: pd.DataFrame, strategies: Sequence[str]) -> pd.Series:
    """Best macro perplexity per matched cell over ``strategies`` (index: the cell)."""
    rows = configs[configs["strategy"].isin(list(strategies))]
    return rows.groupby(_CELL)["ppl_after"].min()


def _best_per_size(configs: pd.DataFrame, strategies: Sequence[str]) -> pd.Series:
    rows = configs[configs["strategy"].isin(list(strategies))]
    return rows.groupby("domain_tokens")["ppl_after"].min()


def _cell_name(cell: tuple) -> str:
    size, pre, spec = cell
    return f"{format_count(size)} tokens, pretrain {pre:.2g}, spec {spec:.2g}"


def _has(configs: pd.DataFrame, *roles: Sequence[str]) -> bool:
    """Whether every role (a list of strategies) has a config."""
    return all(configs["strategy"].isin(list(role)).any() for role in roles)


def _missing(what: str) -> tuple[None, str]:
    return None, f"not measured: the sweep has no {what}"


def _compare_cells(configs: pd.DataFrame, ours: Sequence[str], theirs: Sequence[str],
                   ours_name: str, theirs_name: str) -> tuple[bool | None, str, pd.DataFrame]:
    """Cells where both sides ran: whether ``ours`` is better in most, with the numbers."""
    a, b = _best_per_cell(configs, ours), _best_per_cell(configs, theirs)
    both = pd.concat({"ours": a, "theirs": b}, axis=1).dropna()
    if both.empty:
        return None, f"not measured: no cell where both {ours_name} and {theirs_name} ran", both
    both["ratio"] = both["ours"] / both["theirs"]
    wins = int((both["ratio"] < 1).sum())
    agrees = wins * 2 > len(both)
    evidence = (f"{ours_name} better in {wins} of {len(both)} matched cells (median perplexity "
                f"ratio {both['ratio'].median():.3f}); e.g. {_cell_name(both.index[0])}: "
                f"{both['ours'].iloc[0]:.2f} vs {both['theirs'].iloc[0]:.2f}")
    return agrees, evidence, both


# -- the checks ---------------------------------------------------------------------------------
def _fine_tuning_helps(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    rows = configs.dropna(subset=["ppl_before"])
    if rows.empty:
        return _missing("perplexity before fine-tuning (a strategy with pretraining)")
    gains = 1 - rows["ppl_after"] / rows["ppl_before"]
    better = int((gains > 0).sum())
    worst = rows.loc[gains.idxmin()]
    return better == len(rows), (
        f"{better} of {len(rows)} configs improve with fine-tuning; median gain "
        f"{100 * gains.median():.1f}%; least: {worst['strategy']} at "
        f"{format_count(worst['domain_tokens'])} tokens, {worst['ppl_before']:.2f} -> "
        f"{worst['ppl_after']:.2f}")


def _pretraining_matters(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _small(), _no_pretraining()):
        return _missing("slm and slm-nopt runs")
    slm, nopt = _best_per_size(configs, _small()), _best_per_size(configs, _no_pretraining())
    both = pd.concat({"slm": slm, "nopt": nopt}, axis=1).dropna().sort_index()
    if both.empty:
        return _missing("domain size with both slm and slm-nopt")
    ratio = both["nopt"] / both["slm"]
    agrees = bool(ratio.iloc[0] > 1) and (len(both) == 1 or bool(ratio.iloc[-1] < ratio.iloc[0]))
    parts = [f"{format_count(size)}: slm {r.slm:.2f} vs slm-nopt {r.nopt:.2f} "
             f"(x{r.nopt / r.slm:.2f})" for size, r in both.iterrows()]
    return agrees, "; ".join(parts)


def _pn_beats_slm(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _small(), _experts()):
        return _missing("slm and slm-pn/slm-mix/slm-hn runs")
    agrees, evidence, _ = _compare_cells(configs, _experts(), _small(), "pn/mix/hn", "slm")
    return agrees, evidence


def _advantage_shrinks(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _small(), _experts()):
        return _missing("slm and slm-pn/slm-mix/slm-hn runs")
    _, _, both = _compare_cells(configs, _experts(), _small(), "pn/mix/hn", "slm")
    if both.empty:
        return _missing("cell where both slm and pn/mix/hn ran")
    advantage = (1 - both["ratio"]).groupby(level="domain_tokens").mean().sort_index()
    if len(advantage) < 2:
        return _missing("second domain size to compare")
    parts = [f"{format_count(size)}: {100 * a:+.1f}%" for size, a in advantage.items()]
    return bool(advantage.iloc[-1] < advantage.iloc[0]), (
        "mean perplexity advantage of pn/mix/hn over slm by domain size: " + ", ".join(parts))


def _before_does_not_predict(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    rows = configs.dropna(subset=["ppl_before"])
    pairs = swaps = 0
    for _, cell in rows.groupby(_CELL):
        before, after = cell["ppl_before"].to_numpy(), cell["ppl_after"].to_numpy()
        for i in range(len(cell)):
            for j in range(i + 1, len(cell)):
                pairs += 1
                swaps += (before[i] - before[j]) * (after[i] - after[j]) < 0
    if pairs == 0:
        return _missing("cell with two configs measured before fine-tuning")
    return swaps > 0, (f"{swaps} of {pairs} pairs of configs in the same budget cell swap order "
                       f"between before and after fine-tuning")


def _is_best_small(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _importance()):
        return _missing("slm-is runs")
    ok = frontier.config_table(df)  # within the inference budget only
    top = ok["spec_budget_flops"].max()
    at_top = ok[ok["spec_budget_flops"] == top]
    is_best = _best_per_size(at_top, _importance())
    others = at_top[~at_top["strategy"].isin(_importance())]
    other_best = others.sort_values("ppl_after").drop_duplicates("domain_tokens")
    other_best = other_best.set_index("domain_tokens")
    both = pd.concat({"is": is_best, "other": other_best["ppl_after"]}, axis=1).dropna()
    if both.empty:
        return _missing("other small-inference strategy at the largest specialization budget")
    wins = int((both["is"] < both["other"]).sum())
    parts = [f"{format_count(size)}: slm-is {r['is']:.2f} vs best other "
             f"{other_best.loc[size, 'strategy']} {r['other']:.2f}" for size, r in both.iterrows()]
    return wins * 2 > len(both), (f"at the largest specialization budget ({top:.2g} FLOPs) slm-is "
                                  f"wins {wins} of {len(both)} domain sizes: " + "; ".join(parts))


def _is_beats_llm_small_domain(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _importance(), _large()):
        return _missing("slm-is and llm runs")
    size = configs["domain_tokens"].min()
    small = configs[configs["domain_tokens"] == size]
    is_ppl = small.loc[small["strategy"].isin(_importance()), "ppl_after"].min()
    llm_ppl = small.loc[small["strategy"].isin(_large()), "ppl_after"].min()
    if not (np.isfinite(is_ppl) and np.isfinite(llm_ppl)):
        return _missing("slm-is and llm runs at the smallest domain size")
    return bool(is_ppl < llm_ppl), (f"{format_count(size)} domain tokens: slm-is {is_ppl:.2f} vs "
                                    f"llm {llm_ppl:.2f} (best configs)")


def _distillation_loses(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _distillation(), _experts()):
        return _missing("slm-d and slm-pn/slm-mix/slm-hn runs")
    agrees, evidence, _ = _compare_cells(configs, _experts(), _distillation(), "pn/mix/hn",
                                         "slm-d")
    return agrees, evidence + " (slm-d's pretraining budget includes its teachers)"


def _many_domains_favour_shared(configs: pd.DataFrame, df: pd.DataFrame
                                ) -> tuple[bool | None, str]:
    """Price slm-is's best config against the cheapest-per-domain shared-pretraining config
    that is as good (within :data:`QUALITY_TOLERANCE`), as the study compares PN and IS at the
    quality each reaches; when no such config exists, against the best one."""
    if not _has(configs, _importance(), _experts()):
        return _missing("slm-is and slm-pn/slm-mix/slm-hn runs")
    ok = frontier.config_table(df)
    parts, verdicts = [], []
    for size, group in ok.groupby("domain_tokens"):
        is_rows = group[group["strategy"].isin(_importance())].sort_values("ppl_after")
        shared = group[group["strategy"].isin(_experts())]
        if is_rows.empty or shared.empty:
            continue
        is_best = is_rows.iloc[0]
        good = shared[shared["ppl_after"] <= is_best["ppl_after"] * (1 + QUALITY_TOLERANCE)]
        how = f"the cheapest within {100 * QUALITY_TOLERANCE:.0f}% of slm-is's perplexity"
        if good.empty:
            good, how = shared.nsmallest(1, "ppl_after"), "its best, worse than slm-is"
        pick = good.sort_values(["spec_flops", "generic_flops", "ppl_after"]).iloc[0]
        pn_cost = (pick["generic_flops"], pick["spec_flops"])
        is_cost = (is_best["generic_flops"], is_best["spec_flops"])
        n = frontier.crossover_n(pn_cost, is_cost)
        at50 = (total_cost(*pn_cost, 50), total_cost(*is_cost, 50))
        verdicts.append(pn_cost[1] < is_cost[1] and at50[0] < at50[1])
        cross = f"costs cross at N={n:.3g}" if n is not None else "costs never cross for N >= 1"
        parts.append(f"{format_count(size)}: {pick['strategy']} ({how}: ppl "
                     f"{pick['ppl_after']:.2f}) {pn_cost[0]:.2g} + N x {pn_cost[1]:.2g} vs slm-is "
                     f"(ppl {is_best['ppl_after']:.2f}) {is_cost[0]:.2g} + N x {is_cost[1]:.2g} "
                     f"FLOPs, {cross}; at N=50 {at50[0]:.2g} vs {at50[1]:.2g}")
    if not verdicts:
        return _missing("domain size with both slm-is and a shared-pretraining method")
    return all(verdicts), "; ".join(parts)


def _llm_wins_when_allowed(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    if not _has(configs, _large()):
        return _missing("llm runs")
    others = [s for s in configs["strategy"].unique() if s not in _large()]
    if not others:
        return _missing("strategy to compare llm with")
    agrees, evidence, _ = _compare_cells(configs, _large(), others, "llm", "the best other")
    return agrees, evidence


def _guidance(configs: pd.DataFrame, df: pd.DataFrame) -> tuple[bool | None, str]:
    table = regimes(df).dropna(subset=["agrees"])
    if table.empty:
        return _missing("budget cell whose recommended method was run")
    table = table.assign(agrees=table["agrees"].astype(bool))
    hits = int(table["agrees"].sum())
    by_guidance = table.groupby("guided")["agrees"].agg(["sum", "count"])
    parts = [f"{g}: {int(r['sum'])}/{int(r['count'])}" for g, r in by_guidance.iterrows()]
    return hits * 2 > len(table), (f"the winner is the recommended method in {hits} of "
                                   f"{len(table)} budget cells where that method ran (by "
                                   f"recommendation: " + ", ".join(parts) + ")")


_CHECKS: tuple[tuple[str, Callable], ...] = (
    ("v2 Table 4: Fine-tuning always helps: perplexity after fine-tuning is below perplexity "
     "before.", _fine_tuning_helps),
    ("v2 Table 4: Pretraining is essential with little domain data: slm beats slm-nopt, and "
     "slm-nopt's gap shrinks as the domain data grows.", _pretraining_matters),
    ("v2 Table 8: At equal pretraining cost, projected networks / mixtures beat the plain small "
     "model after fine-tuning.", _pn_beats_slm),
    ("v2 Table 8: Their advantage over the small model shrinks as the domain data grows.",
     _advantage_shrinks),
    ("v2 Table 8: Perplexity before fine-tuning does not predict perplexity after it.",
     _before_does_not_predict),
    ("v2 §4.2: Importance sampling is the best small-inference method with a large specialization "
     "budget.", _is_best_small),
    ("v2 §4.2: With the smallest domain data, importance sampling even beats the large model.",
     _is_beats_llm_small_domain),
    ("v2 §4.1, Fig. 5: Distillation is not competitive once the teacher's cost is counted: "
     "projected networks / mixtures beat slm-d at equal pretraining budget.", _distillation_loses),
    ("v2 Fig. 6: As the number of domains grows, importance sampling's cost grows linearly and "
     "shared pretraining (pn/mix) becomes cheaper.", _many_domains_favour_shared),
    ("v2 Fig. 1: The large model wins when the inference budget allows it.",
     _llm_wins_when_allowed),
    ("v2 Fig. 1: Decision guidance: each budget regime's winner is the method the study "
     "recommends.", _guidance),
)


def check_conclusions(df: pd.DataFrame) -> list[dict]:
    """Every conclusion of the study with this sweep's verdict and the numbers behind it.

    Args:
        df: the results table (all statuses; each check picks what it may use: the large model's
            ``over-inference-budget`` runs count where the study compares with the LLM, and
            only runs within the inference budget count for the small-inference claims).

    Returns:
        One dict per conclusion: ``conclusion`` (text, with the notes section), ``agrees``
        (True, False, or None when not measured) and ``evidence``.
    """
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise SpecplanError(f"check_conclusions: the results table lacks column(s) "
                            f"{', '.join(missing)}; pass a sweep's results table")
    configs = frontier.config_table(df, statuses=_ALL)
    out = []
    for text, check in _CHECKS:
        if configs.empty:
            agrees, evidence = _missing("finished run")
        else:
            agrees, evidence = check(configs, df)
        out.append({"conclusion": text, "agrees": agrees, "evidence": evidence})
    return out
