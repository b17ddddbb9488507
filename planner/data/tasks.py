"""A task built from a domain's own held-out text, so any corpus (the demo's included) has a
task score offline: "which continuation belongs to this document".

Items come from the documents of the corpus's ``test`` (or ``valid``) split, the same hash split
that training and perplexity use, so no model ever trained on them. The distractors are
continuations of other held-out documents of the same domain: telling them apart takes knowing
the domain's text, not its style alone. The output is a multiple-choice task file
(``question``, ``choices``, ``answer``; format in :mod:`planner.engine.tasks`).
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from planner.core.errors import SpecplanError
from planner.core.io import atomic_path
from planner.data.corpus import dedupe, load_documents, split_documents

_SPACE = re.compile(r"\s")


def _cut(text: str, rng: random.Random, context_chars: int,
         continuation_chars: int) -> tuple[str, str] | None:
    """A (context, continuation) pair cut at whitespace at a random place, or None when the
    document is too short. Both are the document's text exactly (layout kept: code and verse
    depend on it), so the context followed by the right continuation is a span of the document;
    the continuation starts with the whitespace it follows, and both end on word boundaries."""
    spaces = [m.start() for m in _SPACE.finditer(text)
              if context_chars <= m.start() <= len(text) - continuation_chars]
    if not spaces:
        return None
    at = rng.choice(spaces)
    context = text[at - context_chars:at]
    first = _SPACE.search(context[:-1])
    context = context[first.end():] if first else context
    continuation = text[at:at + continuation_chars]
    last = max((m.start() for m in _SPACE.finditer(continuation, 1)), default=0)
    continuation = (continuation[:last] if last else continuation).rstrip()
    if not context.strip() or not continuation.strip():
        return None
    return context, continuation


def continuation_items(texts: list[str], *, items: int = 100, choices: int = 4,
                       context_chars: int = 300, continuation_chars: int = 60,
                       seed: int = 0) -> list[dict]:
    """Multiple-choice items from ``texts``: the question is a passage of one document, the
    right choice its next words, the others the words after a random place in other documents.

    Args:
        texts: held-out documents of one domain.
        items: how many items; documents are reused with new cut places when there are fewer
            (a domain's held-out split is often a few dozen documents). Items whose distractors
            would repeat the right words are left out, so a few may be missing.
        choices: choices per item (at least 2).
        context_chars: characters of passage before the cut (fewer after trimming to a word).
        continuation_chars: characters of each choice (fewer after trimming to a word).
        seed: the same seed and texts give the same items.

    Raises:
        SpecplanError: fewer documents long enough than ``choices``, or bad settings.
    """
    if choices < 2 or items < 1 or min(context_chars, continuation_chars) < 1:
        raise SpecplanError(f"continuation task: choices={choices} must be >= 2, items={items} "
                            f">= 1 and context/continuation characters >= 1")
    rng = random.Random(seed)
    usable = [t for t in texts if _cut(t, rng, context_chars, continuation_chars)]
    if len(usable) < choices:
        raise SpecplanError(
            f"continuation task: {len(usable)} held-out document(s) of at least "
            f"{context_chars + continuation_chars} characters, {choices} choices need as many; "
            f"use a larger corpus, fewer --choices or shorter --context-chars")
    out = []
    for index in range(items):
        own = index % len(usable)
        context, right = _cut(usable[own], rng, context_chars, continuation_chars)
        others = [i for i in range(len(usable)) if i != own]
        wrong = []
        for other in rng.sample(others, len(others)):
            _, text = _cut(usable[other], rng, context_chars, continuation_chars)
            if text != right and text not in wrong:
                wrong.append(text)
            if len(wrong) == choices - 1:
                break
        if len(wrong) < choices - 1:
            continue  # the other documents repeat this one's words: no fair distractors
        answer = rng.randrange(choices)
        out.append({"question": context, "choices": wrong[:answer] + [right] + wrong[answer:],
                    "answer": answer})
    return out


def write_continuation_task(corpus: str | os.PathLike[str], out: str | os.PathLike[str], *,
                            split: str = "test", text_field: str = "text",
                            **options) -> dict:
    """Build :func:`continuation_items` from a corpus's held-out ``split`` and write them as a
    JSONL task file (atomically). ``options`` go to :func:`continuation_items`.

    Returns:
        ``path``, ``items``, ``documents`` (held-out documents used) and ``domain``.
    """
    if split not in ("valid", "test"):
        raise SpecplanError(f"split {split!r}: use 'test' or 'valid' (held-out documents)")
    docs = load_documents(corpus, text_field=text_field)
    held_out = split_documents(dedupe(docs.texts)[0])[split]
    records = continuation_items(held_out, **options)
    path = Path(out)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                             encoding="utf-8")
    return {"path": str(path), "items": len(records), "documents": len(held_out),
            "domain": docs.name}
