"""Domain tasks: judge a model by the questions its users ask, not only by perplexity.

A task is a JSONL file, one item per line, in one of two formats (told apart by the first item):

- multiple choice: ``{"question": str, "choices": [str, ...], "answer": int}`` (``answer``
  indexes ``choices``). Each choice is scored by its log-likelihood as the continuation of the
  question, written exactly as given (put the separating space at the start of each choice,
  ``" Paris"``). ``accuracy``: the most likely choice is the answer; ``normalized_accuracy``:
  the same with the log-likelihood divided by the choice's length in characters (as
  lm-evaluation-harness's ``acc_norm``), so long choices are not penalised for their length.
- cloze: ``{"prompt": str, "target": str}``. ``exact_match``: greedy decoding from the prompt
  reproduces the target's tokens; ``target_loglik``: the target's mean log-likelihood per token
  (nats), averaged over items.

An optional first line sets the prompt: ``{"template": "Q: {question}\nA:", "examples": [item,
...], "separator": "\n\n"}`` (any of the three). ``template`` is a Python format string over
each item's fields (extra fields are allowed, e.g. ``{passage}``; default: the question or
prompt alone); ``examples`` are few-shot items of the task's format, never scored, each written
as its template and its answer (the right choice, or the target), joined by ``separator``
before every item's own prompt.

Every context starts with the tokenizer's eos token (documents are joined by eos in training,
so it marks a document start). A context longer than the model's window is cut from the left
(its oldest tokens go; ``truncated`` counts such items); a choice or target that alone does not
fit the window is an error.

Scoring is batched: every (context, continuation) pair becomes one row, rows are sorted by
length and right-padded, and one forward pass per batch gives both the log-likelihoods and the
greedy check (greedy decoding reproduces a continuation exactly when every continuation token is
the argmax given the tokens before it, so no generation loop is needed). A Hugging Face decoder
runs each distinct context once: the rows that share it (an item's choices) read its key/value
cache, so a k-choice item costs one context and k continuations, not k whole rows; only the
context's last position goes through the vocabulary projection. Other modules score whole rows,
from the batch's first continuation token on (``logits_to_keep`` where the model takes it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from planner.core.errors import SpecplanError
from planner.engine.harness import HARNESS_SUFFIXES, harness_task_name, score_harness

FORMATS = {
    "multiple_choice": ("question", "choices", "answer"),
    "cloze": ("prompt", "target"),
}
_HELP = ("write one JSON object per line: {\"question\": ..., \"choices\": [...], \"answer\": "
         "INDEX} (multiple choice) or {\"prompt\": ..., \"target\": ...} (cloze)")


_PROMPT_KEYS = {"template", "examples", "separator"}


@dataclass(frozen=True)
class Prompt:
    """How an item's fields become its context: a template, and few-shot examples before it."""

    template: str | None = None
    examples: tuple[dict, ...] = ()
    separator: str = "\n\n"


@dataclass(frozen=True)
class Item:
    """One task item: a context and its candidate continuations (one for cloze)."""

    line: int
    context: str
    continuations: tuple[str, ...]
    answer: int = 0


@dataclass(frozen=True)
class Task:
    """A validated task file: its name (the file stem), format and items. A harness task
    (format ``harness``, :mod:`planner.engine.harness`) has no items of its own: the harness
    reads them, and ``harness`` is its name there."""

    name: str
    path: str
    format: str
    items: tuple[Item, ...]
    harness: str = ""


def _fail(where: str, problem: str, fix: str) -> SpecplanError:
    return SpecplanError(f"{where}: {problem}; {fix}")


def _text(record: dict, key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"field {key!r} must be a non-blank string, got {value!r}",
                    f"give the {key} text")
    return value


def _prompt(record: dict, where: str) -> Prompt:
    """The prompt line, checked: a template string, a list of example objects, a separator."""
    template, examples = record.get("template"), record.get("examples", [])
    separator = record.get("separator", "\n\n")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise _fail(where, f"'template' must be a non-blank string, got {template!r}",
                    "write it as a format string such as \"Question: {question}\\nAnswer:\"")
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise _fail(where, "'examples' must be a list of item objects",
                    "give few-shot items in the task's own format")
    if not isinstance(separator, str):
        raise _fail(where, f"'separator' must be a string, got {separator!r}",
                    "give the text between examples, e.g. \"\\n\\n\"")
    return Prompt(template, tuple(examples), separator)


def _render(record: dict, fmt: str, prompt: Prompt, where: str) -> str:
    """An item's context without its examples: its template filled from its fields."""
    if prompt.template is None:
        return record[FORMATS[fmt][0]]
    try:
        return prompt.template.format_map(record)
    except KeyError as err:
        raise _fail(where, f"the template names field {err.args[0]!r}, which this item lacks",
                    f"add {err.args[0]!r} to the item or change the template") from None
    except (ValueError, IndexError, AttributeError, TypeError) as err:
        raise _fail(where, f"the template is not a valid format string ({err})",
                    "name fields in braces, e.g. {question}; write {{ and }} for braces")


def _item(record: Any, fmt: str, where: str, line: int, prompt: Prompt = Prompt(),
          shots: str = "") -> Item:
    """One validated item; its context is ``shots`` then its template filled from it."""
    if not isinstance(record, dict):
        raise _fail(where, f"a {type(record).__name__}, not a JSON object", _HELP)
    missing = [k for k in FORMATS[fmt] if k not in record]
    if missing:
        raise _fail(where, f"missing field {missing[0]!r} ({fmt} items need "
                    f"{', '.join(FORMATS[fmt])}, as the first item)", f"add {missing[0]!r}")
    _text(record, FORMATS[fmt][0], where)
    context = shots + _render(record, fmt, prompt, where)
    if fmt == "cloze":
        return Item(line, context, (_text(record, "target", where),))
    choices, answer = record["choices"], record["answer"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise _fail(where, f"'choices' must be a list of at least 2 strings, got {choices!r}",
                    "list the candidate answers")
    for index, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise _fail(where, f"choice {index} is empty ({choice!r})",
                        "give every choice some text or remove it")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise _fail(where, f"'answer' must be an integer index into 'choices', got {answer!r}",
                    f"give 0..{len(choices) - 1}")
    if not 0 <= answer < len(choices):
        raise _fail(where, f"answer {answer} is out of range for {len(choices)} choices",
                    f"give an index 0..{len(choices) - 1} (counted from 0)")
    return Item(line, context, tuple(choices), answer)


def _shots(prompt: Prompt, fmt: str, where: str) -> str:
    """The few-shot text before every item: each example's prompt and its answer."""
    parts = []
    for index, example in enumerate(prompt.examples):
        shown = _item(example, fmt, f"{where}: examples[{index}]", 0, prompt)
        parts.append(shown.context + shown.continuations[shown.answer] + prompt.separator)
    return "".join(parts)


def load_task(path: str | os.PathLike[str]) -> Task:
    """Read and validate a task file (format: the module docstring).

    Raises:
        SpecplanError: a missing or blank file, a line that is not JSON, an unknown format, a
            missing field, an empty choice, an answer out of range, a template naming a field
            an item lacks or a bad few-shot example; the line names the file and line number
            and says how to fix it.
    """
    source = Path(path)
    if not source.is_file():
        raise SpecplanError(f"{source}: no such task file; check the path after DOMAIN=")
    if source.suffix in HARNESS_SUFFIXES:
        return Task(source.stem, str(source), "harness", (), harness_task_name(source))
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise SpecplanError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            f"save the task file as UTF-8 JSONL") from None
    fmt, items, prompt, shots, prompt_line = None, [], Prompt(), "", 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise _fail(where, f"not valid JSON ({err.msg})", _HELP) from None
        if fmt is None:
            keys = record.keys() if isinstance(record, dict) else ()
            if not items and not prompt_line and keys and set(keys) <= _PROMPT_KEYS:
                prompt, prompt_line = _prompt(record, where), number
                continue
            fmt = ("multiple_choice" if "choices" in keys else "cloze" if "prompt" in keys
                   else None)
            if fmt is None:
                raise _fail(where, f"unknown task format (keys {sorted(keys)})", _HELP)
            shots = _shots(prompt, fmt, f"{source}:{prompt_line}")
        items.append(_item(record, fmt, where, number, prompt, shots))
    if not items:
        raise _fail(str(source), "blank task file, no items", _HELP)
    return Task(source.stem, str(source), fmt, tuple(items))


def split_task(task: Task) -> tuple[Task, Task]:
    """The task's items in two fixed halves, by a hash of each item's text: a plan that ranks
    trials by a task ranks them on the first (``selection``) and reports the chosen model on
    the second (``report``), so the reported score never chose the model. The halves do not
    depend on the file's order, and an item keeps its half when others are added."""
    if task.format == "harness":
        raise _fail(task.path, "an lm-evaluation-harness task cannot be split into selection "
                    "and report halves (the harness owns its items)", "use it to report only "
                    "(leave it out of --objective and --min-task), or write it as JSONL")

    def first_half(item: Item) -> bool:
        text = json.dumps([item.context, item.continuations, item.answer])
        return hashlib.sha256(text.encode()).digest()[0] < 128

    halves: tuple[list[Item], list[Item]] = ([], [])
    for item in task.items:
        halves[not first_half(item)].append(item)
    if not all(halves):
        raise _fail(task.path, f"{len(task.items)} item(s) cannot be split into a selection "
                    f"half and a report half", "give the task at least a few dozen items")
    return tuple(dataclasses.replace(task, items=tuple(h)) for h in halves)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def _rows(task: Task, tokenizer: Any, window: int) -> tuple[list[list[int]], list[int], int]:
    """Token rows (eos + context + continuation, cut to ``window`` from the left), the length of
    each row's continuation, and how many items had their context cut."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SpecplanError(f"tokenizer {type(tokenizer).__name__} has no eos token; set "
                            f"tokenizer.eos_token")
    contexts = _encode(tokenizer, [item.context for item in task.items])
    continuations = _encode(tokenizer, [c for item in task.items for c in item.continuations])
    rows, lengths, truncated, at = [], [], 0, 0
    for item, context in zip(task.items, contexts):
        cut = False
        for text in item.continuations:
            cont = continuations[at]
            at += 1
            if len(cont) + 1 > window:
                raise _fail(f"{task.path}:{item.line}",
                            f"continuation {text[:40]!r} is {len(cont)} tokens, longer than the "
                            f"model's window of {window} tokens less one for context",
                            "shorten the choice or target")
            row = [eos, *context, *cont]
            cut |= len(row) > window
            rows.append(row[-window:])
            lengths.append(len(cont))
        truncated += cut
    return rows, lengths, truncated


@torch.no_grad()
def _score_rows(model: torch.nn.Module, rows: list[list[int]], lengths: list[int],
                batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's continuation log-likelihood (summed over its last ``lengths`` tokens) and
    whether greedy decoding reproduces it, one forward pass per batch of similar lengths."""
    device = next(model.parameters()).device
    keeps = "logits_to_keep" in inspect.signature(model.forward).parameters
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    loglik = torch.empty(len(rows), dtype=torch.float64)
    greedy = torch.empty(len(rows), dtype=torch.bool)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        width = len(rows[chosen[0]])
        ids = torch.zeros(len(chosen), width, dtype=torch.long)
        attention = torch.zeros_like(ids)
        target = torch.zeros(len(chosen), width, dtype=torch.bool)  # continuation tokens
        for b, i in enumerate(chosen):
            n = len(rows[i])
            ids[b, :n] = torch.tensor(rows[i])
            attention[b, :n] = 1
            target[b, n - lengths[i]:n] = True
        ids, attention, target = ids.to(device), attention.to(device), target.to(device)
        # Logits at position p predict token p + 1: only p >= (first continuation token) - 1 count.
        first = min(len(rows[i]) - lengths[i] for i in chosen) - 1
        positions = torch.arange(first, width - 1, device=device)
        kept = {"logits_to_keep": positions} if keeps else {}
        logits = model(input_ids=ids, attention_mask=attention, **kept).logits
        logits = (logits if keeps else logits[:, positions]).float()
        _record(logits, ids[:, first + 1:], target[:, first + 1:], chosen, loglik, greedy)
    model.train(was_training)
    return loglik, greedy


def _record(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor,
            rows: list[int], loglik: torch.Tensor, greedy: torch.Tensor) -> None:
    """Write ``rows``' continuation log-likelihoods (summed over the ``scored`` positions) and
    whether each scored target is the argmax, from ``logits`` predicting ``targets``."""
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    index = torch.tensor(rows)
    loglik[index] = (logp * scored).sum(1).double().cpu()
    greedy[index] = ((logits.argmax(-1) == targets) | ~scored).all(1).cpu()


def _caches(model: torch.nn.Module) -> str | None:
    """The argument a model takes its key/value cache by, with explicit positions (Hugging Face
    decoders: ``cache`` in transformers 5.2x, ``past_key_values`` before); None for other
    modules, which are scored row by row."""
    params = inspect.signature(model.forward).parameters
    if not {"position_ids", "use_cache"} <= set(params):
        return None
    return next((name for name in ("cache", "past_key_values") if name in params), None)


@torch.no_grad()
def _score_shared(model: torch.nn.Module, rows: list[list[int]], lengths: list[int],
                  batch_size: int, cache_arg: str = "cache") -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_score_rows` computes, with each distinct context run once: rows sharing a
    context (an item's choices) read its key/value cache, so a k-choice item costs one context
    and k continuations instead of k full rows.

    A batch holds whole groups (up to ``batch_size`` rows, at least one group). Contexts are
    left-padded so they all end at the same index, with positions counted from each row's
    first real token; continuations are right-padded after them, with positions that carry on
    from their context's length."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    only_last = ({"logits_to_keep": 1}
                 if "logits_to_keep" in inspect.signature(model.forward).parameters else {})
    was_training = model.training
    model.eval()
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, row in enumerate(rows):
        groups.setdefault(tuple(row[:len(row) - lengths[r]]), []).append(r)
    ordered = sorted(groups.items(), key=lambda g: -len(g[0]))
    loglik = torch.empty(len(rows), dtype=torch.float64)
    greedy = torch.empty(len(rows), dtype=torch.bool)
    start = 0
    while start < len(ordered):
        end, count = start + 1, len(ordered[start][1])
        while end < len(ordered) and count + len(ordered[end][1]) <= batch_size:
            count += len(ordered[end][1])
            end += 1
        batch = ordered[start:end]
        start = end
        width = len(batch[0][0])
        context = torch.zeros(len(batch), width, dtype=torch.long)
        seen = torch.zeros_like(context)
        for g, (tokens, _) in enumerate(batch):
            context[g, width - len(tokens):] = torch.tensor(tokens)
            seen[g, width - len(tokens):] = 1
        context, seen = context.to(device), seen.to(device)
        cache = DynamicCache()
        last = model(input_ids=context, attention_mask=seen,
                     position_ids=(seen.cumsum(1) - 1).clamp(min=0), use_cache=True,
                     **{cache_arg: cache}, **only_last).logits[:, -1:]
        owner = [g for g, (_, members) in enumerate(batch) for _ in members]
        chosen = [r for _, members in batch for r in members]
        span = max(lengths[r] for r in chosen)
        ids = torch.zeros(len(chosen), span, dtype=torch.long)
        real = torch.zeros_like(ids, dtype=torch.bool)
        for b, r in enumerate(chosen):
            ids[b, :lengths[r]] = torch.tensor(rows[r][len(rows[r]) - lengths[r]:])
            real[b, :lengths[r]] = True
        ids, real = ids.to(device), real.to(device)
        index = torch.tensor(owner, device=device)
        cache.reorder_cache(index)
        offsets = torch.tensor([len(batch[g][0]) for g in owner], device=device)
        # Padded slots get position 0: a learned position table (GPT-2) ends at the window.
        positions = torch.where(real, offsets[:, None] + torch.arange(span, device=device), 0)
        logits = model(input_ids=ids, attention_mask=torch.cat([seen[index], real.long()], 1),
                       position_ids=positions, use_cache=True, **{cache_arg: cache}).logits
        # The context's last position predicts the first continuation token; then each
        # continuation position the next.
        _record(torch.cat([last[index], logits[:, :-1]], 1).float(), ids, real, chosen,
                loglik, greedy)
    model.train(was_training)
    return loglik, greedy


def score_task(model: torch.nn.Module, tokenizer: Any, task: Task, *,
               batch_size: int = 32) -> dict[str, Any]:
    """Score ``model`` on ``task`` (metrics: the module docstring).

    Returns:
        ``format``, ``items``, ``truncated`` and ``accuracy`` (for cloze, the exact match),
        plus ``normalized_accuracy`` and ``chance`` (multiple choice) or ``exact_match`` and
        ``target_loglik`` (cloze); a harness task's: :func:`planner.engine.harness.score_harness`.

    Raises:
        SpecplanError: a choice or target longer than the model's window.
    """
    if task.format == "harness":
        return score_harness(model, tokenizer, task, batch_size=batch_size)
    window = int(model.config.max_position_embeddings)
    rows, lengths, truncated = _rows(task, tokenizer, window)
    cache_arg = _caches(model)
    loglik, greedy = (_score_shared(model, rows, lengths, batch_size, cache_arg) if cache_arg
                      else _score_rows(model, rows, lengths, batch_size))
    out: dict[str, Any] = {"format": task.format, "items": len(task.items),
                           "truncated": truncated}
    if task.format == "cloze":
        per_token = loglik / torch.tensor(lengths, dtype=torch.float64)
        exact = greedy.double().mean().item()
        return {**out, "accuracy": exact, "exact_match": exact,
                "target_loglik": per_token.mean().item()}
    raw = norm = 0
    at = 0
    for item in task.items:
        k = len(item.continuations)
        scores = loglik[at:at + k]
        chars = torch.tensor([len(c) for c in item.continuations], dtype=torch.float64)
        raw += int(scores.argmax()) == item.answer
        norm += int((scores / chars).argmax()) == item.answer
        at += k
    n = len(task.items)
    return {**out, "accuracy": raw / n, "normalized_accuracy": norm / n,
            "chance": sum(1 / len(item.continuations) for item in task.items) / n}
