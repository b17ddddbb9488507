"""``specplan``: a thin click layer over the library API.

Each command parses options, calls one library function and prints. Errors a user can fix are
:class:`planner.errors.SpecplanError`: printed as one line on stderr, exit status 2, no traceback.
Machine-readable output (``--json``) goes to stdout; logs and progress go to stderr.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import click

from planner.errors import SpecplanError

DEFAULT_CACHE = os.environ.get("SPECPLAN_CACHE", ".cache/specplan")


class Ctx:
    def __init__(self, cache: str, as_json: bool):
        self.cache = Path(cache)
        self.as_json = as_json

    def emit(self, data, text: str) -> None:
        """JSON on stdout with ``--json``, the human text otherwise."""
        if self.as_json:  # strict JSON: a missing number (NaN) is null, as parsers expect
            click.echo(json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False))
        else:
            click.echo(text)


def _finite(value):
    """``value`` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def table(rows: list[dict], floatfmt: str = "{:.4g}") -> str:
    """A plain aligned text table (pandas, no index)."""
    import pandas as pd

    if not rows:
        return "(none)"
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda x: floatfmt.format(x))


def ledger_text(ledger) -> str:
    rows = [{**r, "device-seconds": r.pop("seconds")} for r in ledger.rows()]
    return table(rows)


def load_toml(path: str | None) -> dict:
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecplanError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecplanError(f"--config {path}: not valid TOML ({err})") from None


def apply_config(ctx: click.Context, path: str | None) -> None:
    """Config file values become option defaults; unknown keys are an error, not ignored."""
    values = load_toml(path)
    names = {p.name for p in ctx.command.params}
    unknown = sorted(set(k.replace("-", "_") for k in values) - names)
    if unknown:
        raise SpecplanError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    for key, value in values.items():
        key = key.replace("-", "_")
        if ctx.get_parameter_source(key) in (click.core.ParameterSource.DEFAULT, None):
            ctx.params[key] = value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cache", default=DEFAULT_CACHE, show_default=True, envvar="SPECPLAN_CACHE",
              help="Cache folder for corpora, tokenizers, clusterings and pretraining artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.version_option(package_name="specplan")
@click.pass_context
def cli(ctx: click.Context, cache: str, as_json: bool) -> None:
    """Budget-aware planner for small specialized language models."""
    ctx.obj = Ctx(cache, as_json)


# -- data ---------------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Build the demo corpora or describe corpora."""


@data.command("demo")
@click.pass_obj
def data_demo(obj: Ctx) -> None:
    """Build the demo corpora (legal, biomedical, news, speeches, code, generic) offline."""
    from planner.demo_data import build_demo_corpora, demo_table

    paths = build_demo_corpora(obj.cache)
    frame = demo_table(obj.cache)
    obj.emit({"paths": {k: str(v) for k, v in paths.items()}, "table": frame.to_dict("records")},
             f"demo corpora in {obj.cache / 'demo'}\n" + frame.to_string(index=False))


@data.command("stats")
@click.argument("paths", nargs=-1, required=True)
@click.option("--text-field", default="text", show_default=True, help="JSONL field / column.")
@click.option("--seq-len", default=128, show_default=True, help="Tokens per window.")
@click.option("--tokenizer", "tokenizer_dir", default=None, help="Local tokenizer folder.")
@click.option("--vocab-size", default=4096, show_default=True,
              help="BPE vocabulary trained on the first corpus when no tokenizer is given.")
@click.pass_obj
def data_stats(obj: Ctx, paths, text_field, seq_len, tokenizer_dir, vocab_size) -> None:
    """Documents, tokens and sizes per split of each corpus (first one trains the tokenizer)."""
    from planner.inputs import load_inputs

    inputs = load_inputs(paths[0], list(paths[1:]), cache_dir=obj.cache, seq_len=seq_len,
                         vocab_size=vocab_size, tokenizer_dir=tokenizer_dir, text_field=text_field)
    rows = []
    for splits in [inputs.generic, *inputs.domains.values()]:
        s = splits.stats()
        rows.append({"corpus": s["name"], "documents": sum(s["documents"].values()),
                     **{f"{k} tokens": v for k, v in s["tokens"].items()},
                     "MB": round(sum(s["mb"].values()), 2),
                     "duplicates dropped": s["duplicates_dropped"]})
    obj.emit(rows, table(rows))


# -- train / eval -------------------------------------------------------------------------------
@cli.command()
@click.option("--config", "config_path", default=None, help="TOML file of option defaults.")
@click.option("--corpus", default=None, help="Training corpus (folder, .txt, .jsonl, ...).")
@click.option("--init", default=None, help="Model folder to fine-tune (else pretrain fresh).")
@click.option("--size", default="small", show_default=True, help="Model size when pretraining.")
@click.option("--budget", default=None, help="Stop at this budget: FLOPs or device time.")
@click.option("--steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--tokens", default=None, help="Stop after this many tokens (e.g. 2M).")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--early-stopping", type=int, default=None, help="Patience in validations.")
@click.option("--eval-every", type=int, default=50, show_default=True)
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--vocab-size", type=int, default=4096, show_default=True,
              help="BPE vocabulary trained on the corpus when pretraining.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N], mps.")
@click.option("--precision", default="auto", show_default=True, help="auto, bf16 or fp32.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Resume from OUT/checkpoint/last.")
@click.option("--out", default=None, help="Folder for the trained model (transformers format).")
@click.pass_context
def train(ctx, config_path, **opts) -> None:
    """One pretraining or fine-tuning run, from options or a TOML config."""
    from planner.cost import parse_budget
    from planner.runner import train_once
    from planner.units import parse_count

    apply_config(ctx, config_path)
    opts = {k: ctx.params[k] for k in opts}
    obj: Ctx = ctx.obj
    if not opts["corpus"]:
        raise SpecplanError("--corpus is required (a folder of .txt, .jsonl, .parquet or .csv)")
    if not (opts["budget"] or opts["steps"] or opts["tokens"]):
        raise SpecplanError("give a stop: --budget (3e13 or 10m@cpu), --steps or --tokens")
    out = Path(opts["out"]) if opts["out"] else None
    run = train_once(
        opts["corpus"], cache_dir=obj.cache, init=opts["init"], size=opts["size"],
        phase="specialization" if opts["init"] else "generic",
        budget_flops=parse_budget(opts["budget"], what="--budget", cache_dir=obj.cache)
        if opts["budget"] else None,
        steps=opts["steps"], tokens=parse_count(opts["tokens"], "--tokens") if opts["tokens"] else None,
        early_stopping=opts["early_stopping"], out_dir=out, seq_len=opts["seq_len"],
        vocab_size=opts["vocab_size"],
        lr=opts["lr"], batch_size=opts["batch_size"], grad_accum=opts["grad_accum"],
        eval_every=opts["eval_every"], device=opts["device"], precision=opts["precision"],
        compile=opts["compile_"], seed=opts["seed"],
        checkpoint_dir=str(out / "checkpoint") if out and opts["checkpoint_every"] else None,
        checkpoint_every=opts["checkpoint_every"], resume=opts["resume"],
    )
    data = {"model": run.shape, "steps": run.result.steps, "stopped": run.result.stopped,
            "ppl_before": run.ppl_before, "ppl_after": run.ppl_after,
            "model_dir": run.model_dir, "ledger": run.ledger.to_dict()["totals"]}
    before = f"{run.ppl_before:.2f} -> " if run.ppl_before else ""
    obj.emit(data, f"model {run.shape}\nsteps {run.result.steps} (stopped: {run.result.stopped})"
                   f"\nvalidation perplexity {before}{run.ppl_after:.2f}\n"
                   + (f"saved to {run.model_dir}\n" if run.model_dir else "")
                   + ledger_text(run.ledger))


@cli.command("eval")
@click.argument("model_dir")
@click.option("--domain", "domains", multiple=True, required=True, help="Corpus to evaluate on.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["valid", "test"]))
@click.option("--text-field", default="text", show_default=True)
@click.option("--no-speed", is_flag=True, help="Skip the inference throughput measurement.")
@click.pass_obj
def eval_cmd(obj: Ctx, model_dir, domains, split, text_field, no_speed) -> None:
    """Perplexity per domain and macro-averaged, and inference throughput and latency."""
    from planner.runner import evaluate_model

    if not Path(model_dir, "config.json").exists():
        raise SpecplanError(f"{model_dir}: not a model folder (no config.json); pass an --out "
                            f"folder of specplan train/run/plan")
    result = evaluate_model(model_dir, list(domains), cache_dir=obj.cache, text_field=text_field,
                            split=split, speed=not no_speed)
    rows = [{"domain": k, "perplexity": v} for k, v in result["perplexity"].items()]
    text = table(rows)
    if "speed" in result:
        s = result["speed"]
        text += (f"\ninference: {s['tokens_per_second']:.0f} tokens/s (batch {s['batch_size']}), "
                 f"{s['latency_ms_per_token']:.2f} ms/token latency (batch 1)")
    obj.emit(result, text)


# -- run one strategy ---------------------------------------------------------------------------
def budget_options(f):
    """The budget options shared by run, plan and forecast."""
    options = [
        click.option("--pretrain-budget", default=None,
                     help="Generic pretraining budget: FLOPs (2e14) or device time (2h@a100)."),
        click.option("--spec-budget", default=None,
                     help="Specialization budget per domain: FLOPs or device time."),
        click.option("--inference-budget", default=None,
                     help="Deployed model cap: parameters (5M) or FLOPs per token (2e7)."),
        click.option("--domain-tokens", default=None,
                     help="Cut each domain's training data to this size (e.g. 64k, 1M)."),
        click.option("--utilization", type=float, default=None,
                     help="MFU to convert device time to FLOPs (default: measured or 0.4)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_budgets(obj: Ctx, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                  utilization, domains_count: int = 1, defaults: dict | None = None):
    from planner.cost import parse_budget, parse_inference_budget
    from planner.units import parse_count
    from strategies.base import Budgets

    defaults = defaults or {}
    pretrain_budget = pretrain_budget or defaults.get("pretrain")
    spec_budget = spec_budget or defaults.get("spec")
    if pretrain_budget is None or spec_budget is None:
        raise SpecplanError("--pretrain-budget and --spec-budget are required (e.g. 2e13, 10m@cpu)")
    kw = {"utilization": utilization, "cache_dir": obj.cache}
    return Budgets(
        pretrain_flops=parse_budget(pretrain_budget, what="--pretrain-budget", **kw),
        spec_flops=parse_budget(spec_budget, what="--spec-budget", **kw),
        inference=parse_inference_budget(inference_budget or defaults.get("inference")),
        domain_tokens=parse_count(domain_tokens, "--domain-tokens") if domain_tokens else None,
        domains_count=domains_count,
    )


def data_options(f):
    options = [
        click.option("--generic", default=None, help="Generic corpus (folder, .jsonl, ...)."),
        click.option("--domain", "domains", multiple=True, help="Domain corpus; repeatable."),
        click.option("--demo", is_flag=True, help="Use the embedded demo corpora."),
        click.option("--demo-domain", "demo_domains", multiple=True,
                     help="Demo domains to use (default: legal)."),
        click.option("--text-field", default="text", show_default=True),
        click.option("--seq-len", type=int, default=128, show_default=True),
        click.option("--vocab-size", type=int, default=4096, show_default=True),
        click.option("--tokenizer", "tokenizer_dir", default=None, help="Local tokenizer folder."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_data(obj: Ctx, generic, domains, demo, demo_domains, text_field, seq_len, vocab_size,
              tokenizer_dir, domain_tokens):
    from planner.inputs import demo_inputs, load_inputs

    kw = dict(seq_len=seq_len, vocab_size=vocab_size, domain_tokens=domain_tokens)
    if demo:
        return demo_inputs(obj.cache, tuple(demo_domains) or ("legal",), **kw)
    if not generic or not domains:
        raise SpecplanError("give --generic PATH and at least one --domain PATH (or --demo)")
    return load_inputs(generic, list(domains), cache_dir=obj.cache, text_field=text_field,
                       tokenizer_dir=tokenizer_dir, **kw)


def train_template(device: str, batch_size: int, seed: int, eval_every: int = 50):
    from planner.train import TrainConfig

    return TrainConfig(max_steps=1, batch_size=batch_size, seed=seed, device=device,
                       eval_every=eval_every)


@cli.command()
@click.argument("strategy")
@data_options
@budget_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A strategy setting, e.g. --set k=8; repeatable.")
@click.option("--small", default="small", show_default=True, help="Deployed model size.")
@click.option("--large", default="large", show_default=True, help="Large model size.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--embedder", default="hashed", show_default=True, help="hashed or minilm.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=None, help="Export each domain's model under OUT/<domain>.")
@click.pass_obj
def run(obj: Ctx, strategy, generic, domains, demo, demo_domains, text_field, seq_len,
        vocab_size, tokenizer_dir, pretrain_budget, spec_budget, inference_budget,
        domain_tokens, utilization, overrides, small, large, batch_size, embedder, device, seed,
        out) -> None:
    """Run one STRATEGY end to end; print perplexities and the per-phase ledger."""
    from planner.runner import run_strategy
    from planner.workspace import Workspace
    from strategies import get_strategy

    settings = get_strategy(strategy).settings(parse_overrides(overrides))  # fail before data
    budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                            utilization)
    inputs = load_data(obj, generic, domains, demo, demo_domains, text_field, seq_len,
                       vocab_size, tokenizer_dir, budgets.domain_tokens)
    ws = Workspace(inputs.generic, inputs.tokenizer, budgets, obj.cache, small=small, large=large,
                   train=train_template(device, batch_size, seed), embedder=embedder)
    report = run_strategy(strategy, settings, ws, inputs.domains,
                          out_dir=Path(out) if out else None)
    rows = report.rows(budgets)
    lines = [f"strategy {strategy} ({report.status}); pretraining artifact "
             f"{'reused from cache' if report.artifact_reused else 'trained'}",
             table([{k: r[k] for k in ("domain", "ppl_before", "ppl_after", "generic_flops",
                                       "spec_flops")} for r in rows]),
             "ledger (all domains):"]
    combined = report.ledger()
    lines.append(ledger_text(combined))
    obj.emit({"rows": rows, "ledger": combined.to_dict()["totals"]}, "\n".join(lines))


# Demo budgets at CPU scale: minutes on 2 cores for every strategy, same regime as the study.
DEMO_BUDGETS = {"pretrain": "3e12", "spec": "1.5e12", "inference": "2M"}
DEMO_DOMAIN_TOKENS = 32_000


@cli.command()
@data_options
@budget_options
@click.option("--domains-count", type=int, default=1, show_default=True,
              help="Domains sharing the pretraining: total = generic + N x specialization.")
@click.option("--strategies", default=None,
              help="Comma-separated strategies to search (default: all registered).")
@click.option("--trials", type=int, default=None, help="Finished trials (default: one per "
              "strategy, plus two).")
@click.option("--frontier", is_flag=True, help="Two objectives (perplexity, total cost): Pareto set.")
@click.option("--storage", default=None, help="Optuna storage URL (default: OUT/study.journal); "
              "postgresql://... lets workers on several machines share the study.")
@click.option("--gpus", default="all", show_default=True, help="all, none, or ids like 0,1.")
@click.option("--gpus-per-trial", type=int, default=1, show_default=True)
@click.option("--sizes", default=None, help="Deployed sizes to search, e.g. tiny,small "
              "(default: those within the inference budget).")
@click.option("--large", default="large", show_default=True, help="Large model size.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--embedder", default="hashed", show_default=True, help="hashed or minilm.")
@click.option("--pruner", default="asha", show_default=True, help="asha, hyperband or none.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, help="Output folder: plan.json, trials.csv, model/.")
@click.pass_obj
def plan(obj: Ctx, generic, domains, demo, demo_domains, text_field, seq_len, vocab_size,
         tokenizer_dir, pretrain_budget, spec_budget, inference_budget, domain_tokens,
         utilization, domains_count, strategies, trials, frontier, storage, gpus, gpus_per_trial,
         sizes, large, batch_size, embedder, pruner, seed, out) -> None:
    """Search strategies under the budgets, pick the best, build and export it."""
    from planner.plan import plan as run_plan
    from planner.search import PlanSpec
    from strategies import available

    if not demo and not (generic and domains):
        raise SpecplanError("give --generic PATH and at least one --domain PATH (or --demo)")
    budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                            utilization, domains_count, DEMO_BUDGETS if demo else None)
    names = [s.strip() for s in strategies.split(",")] if strategies else available()
    for name in names:
        from strategies import get_strategy

        get_strategy(name)  # unknown names fail here, before any data is loaded
    spec = PlanSpec(
        generic=generic, domains=list(domains), demo=demo,
        demo_domains=list(demo_domains) or ["legal"], pretrain_flops=budgets.pretrain_flops,
        spec_flops=budgets.spec_flops, inference=budgets.inference.__dict__,
        domain_tokens=budgets.domain_tokens or (DEMO_DOMAIN_TOKENS if demo else None),
        domains_count=domains_count, strategies=names,
        trials=trials or len(names) + (1 if demo else 2),  # the demo stays within minutes
        frontier=frontier, sizes=admitted_sizes(sizes, budgets, vocab_size, seq_len),
        large=large, seq_len=seq_len, vocab_size=vocab_size, text_field=text_field,
        tokenizer_dir=tokenizer_dir, batch_size=batch_size, embedder=embedder, pruner=pruner,
        seed=seed, cache_dir=str(obj.cache),
    )
    result = run_plan(spec, out, storage=storage, gpus=gpus, gpus_per_trial=gpus_per_trial)
    obj.emit(result.plan, result.summary)


def admitted_sizes(sizes: str | None, budgets, vocab_size: int, seq_len: int) -> list[str]:
    """Deployed sizes to search: the given ones, or the largest ladder size within the cap."""
    from planner.models import SIZES, model_shape

    if sizes:
        names = [s.strip() for s in sizes.split(",")]
        for name in names:
            model_shape(name, vocab_size=vocab_size, seq_len=seq_len)  # validates the name
        return names
    fits = [name for name in SIZES if name not in ("tiny", "large") and budgets.inference.admits(
        flops_per_token=model_shape(name, vocab_size=vocab_size, seq_len=seq_len)
        .inference_flops_per_token(),
        params=model_shape(name, vocab_size=vocab_size, seq_len=seq_len).params_total)]
    return fits[-1:] or ["tiny"]


@cli.command()
@click.option("--study", "study_name", required=True, help="Study name (plan.json 'study').")
@click.option("--storage", required=True, help="The study's storage URL or journal file.")
@click.pass_obj
def worker(obj: Ctx, study_name, storage) -> None:
    """Join a plan's study (on this or another machine) and run trials until it is done."""
    from planner.plan import worker as run_worker

    ran = run_worker(study_name, storage, str(obj.cache))
    obj.emit({"trials_run": ran}, f"worker finished: {ran} trial(s) run here")


def parse_overrides(overrides) -> dict:
    values = {}
    for item in overrides:
        if "=" not in item:
            raise SpecplanError(f"--set {item!r}: write KEY=VALUE, e.g. --set k=8")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def _register_experiment_commands() -> None:
    """sweep, plot, report and forecast live with the experiments they drive."""
    from experiments.commands import plot as plot_cmd, report, sweep
    from experiments.forecast_cli import forecast_cmd

    for command in (sweep, plot_cmd, report, forecast_cmd):
        cli.add_command(command)


_register_experiment_commands()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except SpecplanError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
