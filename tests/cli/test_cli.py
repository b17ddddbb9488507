"""The CLI as a user runs it: help, JSON output, train/eval round trip, one-line errors."""
import json

import pytest
from click.testing import CliRunner

from planner.cli import cli, main
from planner.engine.models import model_shape
from tests.conftest import specplan


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr("sys.argv", ["specplan", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_help_everywhere():
    for args in ([], ["data"], ["data", "demo"], ["data", "task"], ["train"], ["eval"], ["run"],
                 ["plan"], ["worker"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_train_then_fine_tune_then_eval(corpus_dir, tmp_path):
    cache, base, tuned = tmp_path / "cache", tmp_path / "base", tmp_path / "tuned"
    result = invoke("--cache", str(cache), "--json", "train", "--corpus",
                    str(corpus_dir / "generic.jsonl"), "--size", "tiny", "--seq-len", "32",
                    "--steps", "30", "--batch-size", "8", "--eval-every", "10", "--out", str(base))
    pre = json.loads(result.stdout)
    assert pre["ledger"]["generic"]["tokens"] == 30 * 8 * 32
    assert (base / "model.safetensors").exists() and (base / "tokenizer.json").exists()
    config = tmp_path / "ft.toml"
    config.write_text(f'corpus = "{corpus_dir / "law.jsonl"}"\ninit = "{base}"\nsteps = 20\n'
                      f'batch-size = 8\neval-every = 5\nearly-stopping = 2\nlr = 1e-3\n'
                      f'out = "{tuned}"\n')
    result = invoke("--cache", str(cache), "--json", "train", "--config", str(config))
    ft = json.loads(result.stdout)
    assert ft["ppl_after"] < ft["ppl_before"]  # fine-tuning on the domain helps it
    assert ft["ledger"]["specialization"]["tokens"] > 0
    assert ft["ledger"]["generic"]["tokens"] == 0
    result = invoke("--cache", str(cache), "--json", "eval", str(tuned), "--domain",
                    str(corpus_dir / "law.jsonl"), "--domain", str(corpus_dir / "code.jsonl"))
    ev = json.loads(result.stdout)
    assert ev["perplexity"]["law"] < ev["perplexity"]["code"]
    assert ev["speed"]["tokens_per_second"] > 0
    assert ev["ledger"]["inference"]["tokens"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["train", "--corpus", "nowhere.jsonl", "--steps", "1"], "nowhere.jsonl"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--budget", "2h@tpu"], "unknown device"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--budget", "10"], "smaller than one optimizer"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--steps", "1", "--device", "abacus"],
     "unknown device"),
    (["run", "gpt", "--demo", "--pretrain-budget", "1e9", "--spec-budget", "1e9"],
     "unknown strategy"),
    (["run", "slm", "--generic", "{corpus}/generic.jsonl", "--domain", "{corpus}/law.jsonl",
      "--pretrain-budget", "1e9", "--spec-budget", "1e9", "--set", "k=3"], "unknown setting"),
    (["train", "--config", "{tmp}/bad.toml"], "unknown key"),
])
def test_bad_input_is_one_line_exit_2(args, fragment, corpus_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.toml").write_text('corpus = "x"\nlearning_rate = 1\n')
    args = [a.format(corpus=corpus_dir, tmp=tmp_path) for a in args]
    code, out, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), *args)
    assert code == 2
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("specplan: "))  # progress lines may come first
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list((tmp_path / "c").glob("**/model.safetensors"))  # nothing trained


def test_undecodable_and_tiny_corpora(tmp_path, monkeypatch, capsys):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.txt").write_bytes(b"\xff\xfe\xfa not text")
    code, _, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), "train",
                            "--corpus", str(tmp_path / "bin"), "--steps", "1")
    assert code == 2 and "a.txt" in err
    (tmp_path / "small.txt").write_text("one short document\n\nanother\n\nthird")
    code, _, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), "train",
                            "--corpus", str(tmp_path / "small.txt"), "--steps", "1",
                            "--vocab-size", "300")
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("specplan: "))  # progress lines come first
    assert code != 0 and err.count("\n") == 1


@pytest.fixture
def saved_model(corpus_dir, tmp_path):
    """A random-init tiny model and its tokenizer, saved with save_pretrained as eval reads."""
    from planner.data.corpus import load_documents, train_tokenizer
    from planner.engine.models import model_shape

    tokenizer = train_tokenizer(load_documents(corpus_dir / "generic.jsonl").texts,
                                vocab_size=300, cache_dir=tmp_path / "cache")
    folder = tmp_path / "model"
    model_shape("tiny", vocab_size=len(tokenizer), seq_len=32).build(seed=0).save_pretrained(
        folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_eval_task_end_to_end(saved_model, corpus_dir, tmp_path, monkeypatch, capsys):
    mc = tmp_path / "law_qa.jsonl"
    mc.write_text("".join(json.dumps({"question": f"law document {i}: the court",
                                      "choices": [" shall", " protein", " lambda"], "answer": 0})
                          + "\n" for i in range(5)))
    cloze = tmp_path / "law_cloze.jsonl"
    cloze.write_text(json.dumps({"prompt": "the court", "target": " shall"}) + "\n")
    law = str(corpus_dir / "law.jsonl")
    args = ["--cache", str(tmp_path / "cache"), "eval", str(saved_model), "--domain", law,
            "--no-speed", "--task", f"law={mc}", "--task", f"{law}={cloze}"]
    code, out, _ = specplan(monkeypatch, capsys, "--json", *args)
    tasks = json.loads(out)["tasks"]
    assert code == 0 and set(tasks) == {"law_qa", "law_cloze"}
    qa, cl = tasks["law_qa"], tasks["law_cloze"]
    assert qa["domain"] == cl["domain"] == "law" and qa["items"] == 5 and cl["items"] == 1
    assert qa["format"] == "multiple_choice" and qa["accuracy"] in (0.0, 1.0)  # 5 equal items
    assert qa["chance"] == pytest.approx(1 / 3) and 0 <= qa["normalized_accuracy"] <= 1
    assert cl["format"] == "cloze" and cl["exact_match"] == cl["accuracy"] == 0.0
    assert cl["target_loglik"] < -3  # a random model: about log(1/300) per token
    code, out, _ = specplan(monkeypatch, capsys, *args)
    assert code == 0 and "law_qa" in out and "law_cloze" in out and "accuracy" in out


@pytest.mark.parametrize("task, fragment", [
    ("bio={tmp}/ok.jsonl", "domain 'bio' is not evaluated (the domains are law)"),
    ("law={tmp}/bad.jsonl", "bad.jsonl:2: answer 3 is out of range for 2 choices"),
    ("law", "--task 'law': write DOMAIN=PATH"),
    ("law={tmp}/missing.jsonl", "missing.jsonl: no such task file"),
    ("law={tmp}/hub.yaml", "hub.yaml: harness task 'mmlu' reads dataset_path 'cais/mmlu' from "
                           "the Hugging Face hub"),
])
def test_eval_task_bad_input_is_one_line(task, fragment, saved_model, corpus_dir, tmp_path,
                                         monkeypatch, capsys):
    item = {"question": "q", "choices": ["a", "b"], "answer": 0}
    (tmp_path / "ok.jsonl").write_text(json.dumps(item) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps(item) + "\n" + json.dumps({**item, "answer": 3}))
    (tmp_path / "hub.yaml").write_text("task: mmlu\ndataset_path: cais/mmlu\n")
    code, out, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "c"), "eval",
                              str(saved_model), "--domain", str(corpus_dir / "law.jsonl"),
                              "--no-speed", "--task", task.format(tmp=tmp_path))
    assert code == 2 and out == "" and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()  # refused before any corpus is tokenized


def test_eval_scores_a_harness_task_beside_a_jsonl_one(saved_model, corpus_dir, tmp_path,
                                                       monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    from tests.engine.test_harness import harness_task

    path, jsonl = harness_task(tmp_path)
    law = str(corpus_dir / "law.jsonl")
    code, out, _ = specplan(monkeypatch, capsys, "--json", "--cache", str(tmp_path / "cache"),
                            "eval", str(saved_model), "--domain", law, "--no-speed",
                            "--task", f"law={path}", "--task", f"law={jsonl}")
    tasks = json.loads(out)["tasks"]
    assert code == 0 and set(tasks) == {"sounds_h", "sounds"}
    assert tasks["sounds_h"]["format"] == "harness" and tasks["sounds_h"]["items"] == 24
    assert 0.0 <= tasks["sounds_h"]["accuracy"] <= 1.0 and "acc_norm" in tasks["sounds_h"][
        "harness"]


def test_models_lists_presets_up_to_the_study_sizes_as_json():
    result = invoke("--json", "models")
    cards = {card["name"]: card for card in json.loads(result.stdout)}
    assert {"tiny", "small", "126m", "771m"} <= set(cards)
    assert abs(cards["126m"]["params"] / 126e6 - 1) < 0.01
    assert abs(cards["771m"]["params"] / 771e6 - 1) < 0.01
    assert cards["771m"]["train_flops_per_token"] > 5 * cards["126m"]["train_flops_per_token"]
    text = invoke("models", "126m", "d=64,layers=2,heads=4,kv_heads=2,ff=96").output
    assert "kv=2" in text and "126M" in text and "train GiB (bf16)" in text


def test_run_exports_a_deployed_model_of_another_family(corpus_dir, tmp_path):
    """A Qwen2 shape with grouped-query attention and an untied head trains, charges its own
    FLOPs and exports as a Qwen2 checkpoint that transformers loads on its own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = "d=32,layers=2,heads=4,kv_heads=2,ff=64,family=qwen2,tied=false"
    out = tmp_path / "models"
    result = invoke("--cache", str(tmp_path / "cache"), "--json", "run", "slm",
                    "--generic", str(corpus_dir / "generic.jsonl"),
                    "--domain", str(corpus_dir / "law.jsonl"), "--pretrain-budget", "2e9",
                    "--spec-budget", "5e8", "--small", spec, "--large", "2x", "--device", "cpu",
                    "--seq-len", "32", "--vocab-size", "300", "--out", str(out))
    rows = json.loads(result.stdout)["rows"]
    assert rows[0]["params_inference"] == model_shape(spec, vocab_size=300, seq_len=32).params_total
    model = AutoModelForCausalLM.from_pretrained(out / "law")
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings
    assert len(AutoTokenizer.from_pretrained(out / "law")) == model.config.vocab_size


def test_run_scores_a_task_on_its_domain_model(corpus_dir, tmp_path, monkeypatch, capsys):
    task = tmp_path / "law_qa.jsonl"
    task.write_text("".join(json.dumps({"question": "law document: the court", "choices": [
        " shall", " protein", " lambda"], "answer": 0}) + "\n" for _ in range(3)))
    args = ["--cache", str(tmp_path / "cache"), "run", "slm-nopt",
            "--generic", str(corpus_dir / "generic.jsonl"),
            "--domain", str(corpus_dir / "law.jsonl"), "--pretrain-budget", "0",
            "--spec-budget", "5e8", "--small", "tiny",
            "--device", "cpu", "--seq-len", "32", "--vocab-size", "300",
            "--task", f"{corpus_dir / 'law.jsonl'}={task}"]
    rows = json.loads(invoke(args[0], args[1], "--json", *args[2:]).stdout)["rows"]
    assert rows[0]["task:law_qa"] in (0.0, 1.0)  # three copies of one item: all or none right
    assert "task:law_qa" in invoke(*args).stdout  # the printed table's column
    code, _, err = specplan(monkeypatch, capsys, *args[:-1], f"bio={task}")
    assert code == 2 and "domain 'bio' is not evaluated" in err
