"""Distillation: the loss against a full-vocabulary reference, the teacher cache and its charges,
multi-teacher weights, the vocabulary check, and ``slm-d`` end to end on the tiny workspace."""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.models import model_shape
from planner.run.runner import run_strategy
from strategies import base, get_strategy
from strategies.distill.strategy import DistillationStrategy, mid_size
from strategies.distill.teachers import (
    DistillLoss,
    TeacherCache,
    TopK,
    check_teacher,
    combine_teachers,
    kd_loss,
    teacher_weights,
)
from strategies.small_model import LargeModelStrategy, SmallModelStrategy
from tests.conftest import make_workspace

SEQ = 32  # the tiny workspace's window


def tiny_model(vocab: int, seed: int, size: str = "tiny") -> torch.nn.Module:
    return model_shape(size, vocab_size=vocab, seq_len=SEQ).build(seed=seed)


def kl_to_teacher(teacher, student, windows) -> float:
    """Mean per-token KL(teacher || student) over the full vocabulary at temperature 1."""
    with torch.no_grad():
        t = torch.log_softmax(teacher(input_ids=windows).logits[:, :-1].float(), -1)
        s = torch.log_softmax(student(input_ids=windows).logits[:, :-1].float(), -1)
    return (t.exp() * (t - s)).sum(-1).mean().item()


def reference_loss(student_logits, teacher_logits, targets, alpha, temperature, divergence):
    """The same loss over the full vocabulary, written independently with torch's KL."""
    v = student_logits.size(-1)
    hard = F.cross_entropy(student_logits.reshape(-1, v), targets.reshape(-1))
    s = torch.log_softmax(student_logits / temperature, -1).reshape(-1, v)
    t = torch.log_softmax(teacher_logits / temperature, -1).reshape(-1, v)
    if divergence == "forward_kl":
        soft = F.kl_div(s, t, log_target=True, reduction="batchmean")
    elif divergence == "reverse_kl":
        soft = F.kl_div(t, s, log_target=True, reduction="batchmean")
    else:
        m = torch.log((s.exp() + t.exp()) / 2)
        soft = 0.5 * (F.kl_div(m, t, log_target=True, reduction="batchmean")
                      + F.kl_div(m, s, log_target=True, reduction="batchmean"))
    return (1 - alpha) * hard + alpha * temperature**2 * soft


# -- the loss and the cache ---------------------------------------------------------------------
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_cached_teacher_gives_the_live_loss_and_charges_once(tiny_inputs, tmp_path, divergence):
    vocab = len(tiny_inputs.tokenizer)
    windows = tiny_inputs.domains["law"].train.ids[:12]  # (12, 32)
    teacher, student = tiny_model(vocab, seed=1), tiny_model(vocab, seed=2)
    cache, ledger = TeacherCache(tmp_path), Ledger()
    first = cache.outputs(teacher, windows, ledger=ledger, label="teacher passes", top_k=vocab,
                          temperature=2.0)
    forward = model_shape("tiny", vocab_size=vocab, seq_len=SEQ).forward_flops_per_token()
    assert not first.reused and first.topk.k == vocab
    assert ledger.entries[0].phase == "specialization"
    assert ledger.entries[0].flops == pytest.approx(12 * SEQ * forward)
    second = cache.outputs(teacher, windows, ledger=ledger, label="teacher passes", top_k=vocab,
                           temperature=2.0)
    # A cache saves time, not accounted cost: the same FLOPs and tokens again, on "cache".
    again = ledger.entries[1]
    assert second.reused and "cached" in again.label and again.device == "cache"
    assert (again.flops, again.tokens) == (ledger.entries[0].flops, ledger.entries[0].tokens)
    assert torch.equal(second.topk.ids, first.topk.ids)

    loss = DistillLoss(windows, second.topk, alpha=0.7, temperature=2.0, divergence=divergence)
    with torch.no_grad():
        cached = loss(student, windows).item()
        live = reference_loss(student(input_ids=windows).logits[:, :-1],
                              teacher(input_ids=windows).logits[:, :-1], windows[:, 1:],
                              0.7, 2.0, divergence).item()
    assert cached == pytest.approx(live, rel=2e-3)


def test_kd_loss_edges():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    t_log, t_ids = torch.log_softmax(torch.randn(2, 5, 11), -1).topk(3, -1)
    hard = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    args = (logits, t_log, t_ids, targets)
    assert kd_loss(*args, alpha=0.0, temperature=2.0).item() == pytest.approx(hard.item())
    # distilling a student that already matches the teacher on the support costs nothing
    same = torch.full((2, 5, 11), -30.0).scatter(-1, t_ids, t_log)
    assert kd_loss(same, t_log, t_ids, targets, alpha=1.0, temperature=1.0).item() == \
        pytest.approx(0.0, abs=1e-5)
    with pytest.raises(SpecplanError, match="divergence='kl'"):
        kd_loss(*args, alpha=0.5, temperature=1.0, divergence="kl")
    with pytest.raises(SpecplanError, match="alpha=1.5"):
        kd_loss(*args, alpha=1.5, temperature=1.0)


# -- several teachers ---------------------------------------------------------------------------
def random_teacher(seed: int, sharpness: float, n=4, positions=6, vocab=50, k=5) -> TopK:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, positions, vocab, generator=gen) * sharpness
    values, ids = torch.log_softmax(logits, -1).topk(k, -1)
    return TopK(values.half(), ids.int())


@pytest.mark.parametrize("weights", ["uniform", "confidence", [1.0, 2.0, 3.0], "0.2,0.3,0.5"])
def test_teacher_weights_sum_to_one_per_token(weights):
    teachers = [random_teacher(0, 1.0), random_teacher(1, 3.0), random_teacher(2, 0.5)]
    w = teacher_weights(teachers, weights)  # (3, N, P)
    assert w.shape == (3, 4, 6) and (w >= 0).all()
    assert torch.allclose(w.sum(0), torch.ones(4, 6), atol=1e-6)
    mixed = combine_teachers(teachers, weights, top_k=15)  # the union has at most 15 tokens
    assert torch.allclose(mixed.logprobs.float().exp().sum(-1), torch.ones(4, 6), atol=2e-3)
    # the mixture is the weighted sum of the renormalised teachers, token by token
    token = int(mixed.ids[1, 2, 0])
    expected = sum(w[i, 1, 2] * t.probs()[1, 2][t.ids[1, 2] == token].sum()
                   for i, t in enumerate(teachers))
    assert mixed.logprobs[1, 2, 0].float().exp().item() == pytest.approx(expected.item(), abs=2e-3)


def test_confidence_weights_favour_the_surer_teacher_and_bad_weights_are_refused():
    sure, unsure = random_teacher(0, 8.0), random_teacher(1, 0.1)
    w = teacher_weights([sure, unsure], "confidence")
    assert (w[0] > w[1]).all()
    same = combine_teachers([sure, sure], "confidence")
    assert torch.allclose(same.probs(), sure.probs(), atol=2e-3)
    for bad, message in (("1,2,3", "3 weight"), ("-1,2", "non-negative"), ("best", "uniform")):
        with pytest.raises(SpecplanError, match=message):
            teacher_weights([sure, unsure], bad)


# -- distillation moves the student towards the teacher -----------------------------------------
def test_distillation_lowers_the_students_divergence_to_the_teacher(tiny_inputs, tmp_path):
    ws = make_workspace(tiny_inputs, tmp_path, spec_flops=1e12)
    law, vocab = tiny_inputs.domains["law"].cut(2048), ws.vocab_size
    per_token = model_shape("tiny", vocab_size=vocab, seq_len=SEQ).train_flops_per_token()
    step = ws.train.tokens_per_step(SEQ) * per_token
    settings = get_strategy("slm").settings({"ft_lr": 3e-3, "ft_patience": 8})
    teacher = tiny_model(vocab, seed=1)
    ws.finetune(teacher, law, settings, flops_per_token=per_token, max_flops=20 * step,
                label="teacher")
    outputs = TeacherCache(tmp_path).outputs(teacher, law.train.ids, ledger=ws.ledger,
                                             label="teacher passes", top_k=vocab, temperature=1.0)
    held_out = law.valid.ids
    student = tiny_model(vocab, seed=2)
    before = kl_to_teacher(teacher, student, held_out)
    ws.finetune(student, law, settings, flops_per_token=per_token, max_flops=15 * step,
                label="distillation", loss_fn=DistillLoss(law.train.ids, outputs.topk, alpha=1.0,
                                                          temperature=1.0, divergence="forward_kl"))
    # alpha=1: the student never sees the hard targets, only the teacher's distributions
    assert kl_to_teacher(teacher, student, held_out) < 0.5 * before


# -- the vocabulary check -----------------------------------------------------------------------
class OtherVocabularyTeacher(LargeModelStrategy):
    """A teacher whose model has 8 fewer tokens than the workspace tokenizer (more would be a
    padded embedding, which is accepted)."""

    name = "test-other-vocab"

    def shape(self, ws):
        return model_shape(ws.large, vocab_size=ws.vocab_size - 8, seq_len=ws.seq_len)


def test_teacher_with_another_vocabulary_is_refused_before_training(tiny_ws, tiny_inputs,
                                                                    monkeypatch):
    monkeypatch.setitem(base._REGISTRY, OtherVocabularyTeacher.name, OtherVocabularyTeacher)

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("strategies.workspace.train", no_training)
    with pytest.raises(SpecplanError, match="teacher test-other-vocab: its vocabulary \\(292"):
        run_strategy("slm-d", {"teachers": "llm,test-other-vocab"}, tiny_ws,
                     {"law": tiny_inputs.domains["law"]})
    assert not tiny_ws.ledger.entries and not (tiny_ws.cache_dir / "artifacts").exists()


def test_teacher_with_another_tokenizer_of_the_same_size_is_refused(tiny_inputs, tmp_path):
    from planner.data.corpus import train_tokenizer
    from tests.conftest import synthetic_documents

    student = tiny_inputs.tokenizer
    other = train_tokenizer(synthetic_documents("code", 50, seed=3), vocab_size=len(student),
                            cache_dir=tmp_path)
    with pytest.raises(SpecplanError, match="teacher llm: .*tokenizer"):
        check_teacher("teacher llm", vocab_size=len(student), tokenizer=other,
                      student_vocab_size=len(student), student_tokenizer=student)
    check_teacher("teacher llm", vocab_size=len(student), tokenizer=student,
                  student_vocab_size=len(student), student_tokenizer=student)


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"teachers": "gpt"}, "unknown strategy 'gpt'"),
    ({"teachers": "llm,slm-d"}, "cannot teach itself"),
    ({"teachers": "llm,llm"}, "listed twice"),
    ({"teachers": "llm", "teacher_weights": "1,2"}, "2 weight\\(s\\) for 1 teacher"),
    ({"divergence": "kl"}, "not one of"),
    ({"teacher_fraction": 1.0}, "out of range"),
])
def test_bad_settings_are_one_clear_error(values, message):
    with pytest.raises(SpecplanError, match=message):
        get_strategy("slm-d").settings(values)


def test_mid_size_is_between_deployed_and_large_or_falls_back_to_deployed():
    def ws(small, large):
        return SimpleNamespace(small=small, large=large, shape=lambda size: model_shape(
            size, vocab_size=4096, seq_len=64))

    assert mid_size(ws("small", "large")) == "medium"
    assert mid_size(ws("tiny", "small")) == "d=96,layers=2,heads=3,ff=384"  # tiny's depth
    assert mid_size(ws("tiny", "d=64,layers=2,heads=2,ff=300")) == "tiny"  # nothing between


# -- slm-d end to end ---------------------------------------------------------------------------
def law_and_bio(inputs):
    return inputs.domains["law"].cut(1024), inputs.domains["bio"].cut(1024)  # 32 windows each


@pytest.fixture(scope="module")
def distilled(tiny_inputs, tmp_path_factory):
    """slm-d with an llm teacher on law: 1 teacher and 12 student steps in each phase."""
    ws = make_workspace(tiny_inputs, tmp_path_factory.mktemp("slm-d"), pretrain_flops=6e9,
                        spec_flops=7e9)
    law, _ = law_and_bio(tiny_inputs)
    settings = {"teachers": "llm", "top_k": 16, "alpha": 0.5}
    return ws, settings, run_strategy("slm-d", settings, ws, {"law": law})


def labels(ledger: Ledger, phase: str) -> dict[str, float]:
    return {e.label: e.flops for e in ledger.entries if e.phase == phase}


def test_slm_d_charges_teachers_to_the_right_phases(distilled, tiny_inputs):
    ws, _, report = distilled
    law, _ = law_and_bio(tiny_inputs)
    generic = labels(report.generic_ledger, "generic")
    assert generic["teacher llm: llm pretraining"] > 0
    assert generic["student: slm pretraining"] > 0
    assert sum(generic.values()) == pytest.approx(report.estimate.generic_flops)
    assert sum(generic.values()) <= ws.budgets.pretrain_flops
    result = report.domains[0]
    spec = labels(result.ledger, "specialization")
    teacher_forward = ws.shape("small").forward_flops_per_token()
    assert list(spec) == ["teacher llm: fine-tune", "teacher llm passes", "student: distillation"]
    assert spec["teacher llm passes"] == pytest.approx(law.train.tokens * teacher_forward)
    assert all(flops > 0 for flops in spec.values())
    assert sum(spec.values()) <= ws.budgets.spec_flops
    assert result.ppl_after < result.ppl_before
    assert result.notes["teacher llm"]["outputs_reused"] is False


def test_teacher_artifacts_are_reused_for_a_second_domain(distilled, tiny_inputs, monkeypatch):
    ws, settings, first = distilled
    _, bio = law_and_bio(tiny_inputs)

    def no_training(*args, **kwargs):
        raise AssertionError("pretraining ran twice")

    for cls in (SmallModelStrategy, DistillationStrategy):
        monkeypatch.setattr(cls, "pretrain", no_training)
    second = run_strategy("slm-d", settings, ws, {"bio": bio})
    assert second.artifact_reused
    assert second.generic_ledger.totals() == first.generic_ledger.totals()
    spec = labels(second.domains[0].ledger, "specialization")
    assert spec["teacher llm: fine-tune"] > 0 and spec["teacher llm passes"] > 0


def test_a_new_student_reuses_the_teacher_artifact_and_its_cached_outputs(distilled, tiny_inputs,
                                                                         monkeypatch):
    ws, settings, first = distilled
    law, _ = law_and_bio(tiny_inputs)

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher was pretrained again")

    monkeypatch.setattr(LargeModelStrategy, "pretrain", no_training)
    report = run_strategy("slm-d", {**settings, "lr": 4e-3}, ws, {"law": law})  # a new student
    assert not report.artifact_reused
    teacher = [e for e in report.generic_ledger.entries if e.label.startswith("teacher llm")]
    assert teacher[0].label.endswith("[cached artifact]") and teacher[0].device == "cache"
    # the teacher's pretraining still counts in the recipe's generic cost
    paid = labels(first.generic_ledger, "generic")["teacher llm: llm pretraining"]
    assert teacher[0].flops == paid
    # the same teacher fine-tuned on the same windows: its outputs come from the cache, charged
    # as when computed, so the student gets the same budget as the first run's
    spec = labels(report.domains[0].ledger, "specialization")
    paid_passes = labels(first.domains[0].ledger, "specialization")["teacher llm passes"]
    cached = [label for label in spec if label.startswith("teacher llm passes (cached")]
    assert cached and spec[cached[0]] == paid_passes
    assert report.domains[0].notes["teacher llm"]["outputs_reused"] is True


def test_budgets_too_small_for_the_teachers_are_refused_before_compute(distilled, tiny_inputs):
    ws, settings, _ = distilled
    law, _ = law_and_bio(tiny_inputs)
    strategy = get_strategy("slm-d")
    known = replace(ws, budgets=replace(ws.budgets, spec_flops=5e9, domain_tokens=1024),
                    ledger=Ledger())
    estimate = strategy.estimate(strategy.settings(settings), known)
    passes = 1024 * ws.shape("small").forward_flops_per_token()
    teacher_step = ws.train.tokens_per_step(SEQ) * ws.shape("small").train_flops_per_token()
    # one teacher step must fit its 50% share of what the passes leave
    assert estimate.min_spec_flops == pytest.approx(passes + teacher_step / 0.5)
    with pytest.raises(BudgetError, match="specialization budget 5e\\+09 FLOPs is .* short .*"
                                          "teacher llm .* teacher passes"):
        run_strategy("slm-d", settings, known, {"law": law})
    # the domain size unknown: the exact per-domain check stops it before the teachers train
    unknown = replace(known, budgets=replace(known.budgets, domain_tokens=None), ledger=Ledger())
    with pytest.raises(BudgetError, match="for domain law"):
        run_strategy("slm-d", settings, unknown, {"law": law})
    assert labels(unknown.ledger, "specialization") == {}
    assert not known.ledger.entries


def test_staged_distillation_trains_and_charges_the_mid_size_teacher(tiny_inputs, tmp_path):
    ws = make_workspace(tiny_inputs, tmp_path, pretrain_flops=6e9, spec_flops=9e9)
    law, _ = law_and_bio(tiny_inputs)
    settings = {"teachers": "llm", "staged": True, "top_k": 16, "teacher_fraction": 0.6,
                "teacher_spec_share": 0.7}
    report = run_strategy("slm-d", settings, ws, {"law": law})
    generic = labels(report.generic_ledger, "generic")
    assert set(generic) == {"teacher llm: llm pretraining", "mid-size teacher: slm pretraining",
                            "student: slm pretraining"}
    spec = labels(report.domains[0].ledger, "specialization")
    assert list(spec) == ["teacher llm: fine-tune", "teacher llm passes",
                          "mid-size teacher: distillation", "mid-size teacher passes",
                          "student: distillation"]
    mid = mid_size(ws)  # tiny widened between tiny and small
    assert ws.shape(ws.small).params_total < ws.shape(mid).params_total < ws.shape(
        ws.large).params_total
    mid_forward = ws.shape(mid).forward_flops_per_token()
    assert spec["mid-size teacher passes"] == pytest.approx(law.train.tokens * mid_forward)
    assert spec["mid-size teacher: distillation"] > 0
    assert sum(spec.values()) <= ws.budgets.spec_flops
    assert report.domains[0].notes["mid-size teacher"]["size"] == mid
    assert math.isfinite(report.domains[0].ppl_after)


def test_two_teachers_are_each_specialized_charged_and_mixed(tiny_inputs, tmp_path):
    ws = make_workspace(tiny_inputs, tmp_path, pretrain_flops=7e9, spec_flops=8e9)
    law, _ = law_and_bio(tiny_inputs)
    settings = {"teachers": "llm,slm", "teacher_weights": "confidence", "top_k": 16,
                "teacher_spec_share": 0.7}
    report = run_strategy("slm-d", settings, ws, {"law": law})
    generic = labels(report.generic_ledger, "generic")
    assert generic["teacher llm: llm pretraining"] > 0
    assert generic["teacher slm: slm pretraining"] > 0
    spec = labels(report.domains[0].ledger, "specialization")
    for size, teacher in (("small", "llm"), ("tiny", "slm")):
        assert spec[f"teacher {teacher}: fine-tune"] > 0
        forward = ws.shape(size).forward_flops_per_token()
        assert spec[f"teacher {teacher} passes"] == pytest.approx(law.train.tokens * forward)
    assert sum(spec.values()) <= ws.budgets.spec_flops
    assert report.domains[0].notes["distill_steps"] > 0


def test_a_teacher_checkpoint_is_fine_tuned_charged_at_its_size_and_taught(tiny_inputs, tmp_path):
    """The production recipe: an open checkpoint (here a Llama with grouped-query attention,
    saved with the student's tokenizer) fine-tuned on the domain, then distilled from."""
    teacher_shape = model_shape("d=96,layers=2,heads=4,kv_heads=2,ff=192",
                                vocab_size=len(tiny_inputs.tokenizer), seq_len=64)
    folder = tmp_path / "teacher-ckpt"
    teacher_shape.build(seed=2).save_pretrained(folder)
    tiny_inputs.tokenizer.save_pretrained(folder)
    ws = make_workspace(tiny_inputs, tmp_path / "cache", pretrain_flops=3e9, spec_flops=5e9)
    law, _ = law_and_bio(tiny_inputs)
    settings = {"teachers": str(folder), "top_k": 16, "teacher_spec_share": 0.5}
    report = run_strategy("slm-d", settings, ws, {"law": law})
    generic = labels(report.generic_ledger, "generic")
    assert generic == {"teacher teacher-ckpt: base checkpoint (sunk cost)": 0.0,
                       "student: slm pretraining": pytest.approx(3e9, rel=0.1)}
    spec = labels(report.domains[0].ledger, "specialization")
    assert list(spec) == ["teacher teacher-ckpt: fine-tune", "teacher teacher-ckpt passes",
                          "student: distillation"]
    at_window = model_shape("d=96,layers=2,heads=4,kv_heads=2,ff=192",
                            vocab_size=len(tiny_inputs.tokenizer), seq_len=ws.seq_len)
    assert spec["teacher teacher-ckpt passes"] == pytest.approx(
        law.train.tokens * at_window.forward_flops_per_token())  # its size, the plan's window
    notes = report.domains[0].notes["teacher teacher-ckpt"]
    assert notes["outputs_bytes"] == law.train.n * (ws.seq_len - 1) * 16 * 6  # top-k: bounded
    # A checkpoint already tuned for the domain teaches as given: its share goes to the student.
    as_given = run_strategy("slm-d", {**settings, "tune_checkpoints": False}, ws, {"law": law})
    spec_given = labels(as_given.domains[0].ledger, "specialization")
    assert list(spec_given) == ["teacher teacher-ckpt passes", "student: distillation"]
    assert spec_given["student: distillation"] > spec["student: distillation"]
    assert as_given.domains[0].notes["teacher teacher-ckpt"]["fine_tuned"] is False


def test_a_padded_teacher_vocabulary_is_taught_without_its_padding(tiny_inputs, tmp_path):
    """Open checkpoints pad their embedding past the tokenizer (Qwen2: 151,936 rows for
    151,665 tokens); the rows beyond it are no token and never reach the student."""
    from safetensors.torch import load_file

    tokens = len(tiny_inputs.tokenizer)
    folder = tmp_path / "padded"
    model_shape("d=64,layers=1,heads=2,ff=128", vocab_size=tokens + 12,
                seq_len=64).build(seed=3).save_pretrained(folder)
    tiny_inputs.tokenizer.save_pretrained(folder)
    ws = make_workspace(tiny_inputs, tmp_path / "cache", pretrain_flops=3e9, spec_flops=5e9)
    law, _ = law_and_bio(tiny_inputs)
    report = run_strategy("slm-d", {"teachers": str(folder), "top_k": 16,
                                    "teacher_spec_share": 0.5}, ws, {"law": law})
    assert report.domains[0].ppl_after < report.domains[0].ppl_before
    (outputs,) = (tmp_path / "cache" / "teacher-outputs").glob("*.safetensors")
    ids = load_file(str(outputs))["ids"]
    assert ids.shape[-1] == 16 and int(ids.max()) < tokens
    with pytest.raises(SpecplanError, match="its vocabulary \\(299 tokens"):
        check_teacher("teacher short", vocab_size=tokens - 1, tokenizer=tiny_inputs.tokenizer,
                      student_vocab_size=tokens, student_tokenizer=tiny_inputs.tokenizer)


def test_a_teacher_checkpoint_with_another_tokenizer_is_refused(tiny_inputs, tmp_path):
    from planner.data.corpus import train_tokenizer

    other = train_tokenizer(["another corpus entirely, with other words"] * 50, vocab_size=280,
                            cache_dir=tmp_path / "tok")
    folder = tmp_path / "foreign"
    model_shape("tiny", vocab_size=len(other), seq_len=64).build().save_pretrained(folder)
    other.save_pretrained(folder)
    ws = make_workspace(tiny_inputs, tmp_path / "cache")
    strategy = get_strategy("slm-d")
    with pytest.raises(SpecplanError, match="teacher foreign: its vocabulary .* is not the "
                                            "student's .* teachers must use the student's"):
        strategy.estimate(strategy.settings({"teachers": str(folder)}), ws)
