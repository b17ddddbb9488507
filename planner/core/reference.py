"""The reference study's guidance: which method wins in which budget regime (arXiv 2402.01093
v2, §5 and Fig. 1)."""
from __future__ import annotations

# Reference study (arXiv 2402.01093 v2) Fig. 1 and §1: which method wins in which budget regime.
GUIDANCE = {
    "llm": "the inference budget admits the large model: pretrain large, then fine-tune",
    "slm-is": "small inference budget, large specialization budget per domain (few domains): "
              "importance sampling, then fine-tune",
    "slm-pn": "small inference budget, small specialization budget (many domains share "
              "pretraining): projected networks or hard mixtures, then fine-tune the expert",
}


def reference_guidance(budgets, large_params: int, large_flops: float) -> str:
    """The strategy the reference study would recommend for these budgets.

    Any strategy of the same family carries the recommendation out (``slm-pn`` stands for the
    experts family: the study groups projected networks with hard mixtures and hyper-networks);
    the families are the strategies' own traits (``strategies.family_of``).
    """
    if budgets.inference.admits(flops_per_token=large_flops, params=large_params):
        return "llm"
    if budgets.domains_count * budgets.spec_flops >= budgets.pretrain_flops:
        return "slm-is"
    return "slm-pn"
