"""Judges: does a drafted step say the same thing as the target's step at the same position?

One small interface (`Judge.verdicts`), four judges:
- `exact`: equal after normalisation (case, spacing, punctuation other than operators, thousands separators).
- `overlap` (the cheap semantic check, the CPU default): the same numbers in the same order, and at least
  `min_overlap` of the content words and operators shared (Jaccard over their sets). Arithmetic steps agree
  when their numbers do; the word test keeps "2 + 3 = 5" from matching "2 - 3 = 5" by numbers alone.
- `target`: the paper's way: the target is asked whether the two steps are aligned and the verdict is the
  next-token read of " yes" against " no" (its time counts in every speed figure, as the judges' time does,
  because the caller clocks `verdicts`). The question puts the problem and the steps so far before the two
  steps, so consecutive questions share that prefix: the judge keeps the keys and values of its last question
  and feeds only what differs (the two steps, mostly), not a prefill of the whole question per pair.
- `numbers-target`: the same numbers in the same order first (free), then the target's yes for the pairs left.
  The target alone said yes to a wrong formula with other numbers (docs/reasoning.md); this judge never asks it
  about such a pair, and asks less often.

None of them makes lookahead reasoning token-lossless: an accepted draft step is kept in place of the target's.
"""

from __future__ import annotations

import re
from typing import Protocol

import torch
from transformers import DynamicCache

from onlinespec.errors import UserError
from onlinespec.prompting import encode_prompt
from onlinespec.reasoning.step_writer import reuse_prefix

_WORD = re.compile(r"[a-z]+|[-+*/=<>^%\u00d7\u00f7]")  # words and the operators a step's arithmetic turns on
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "and",
        "is",
        "are",
        "be",
        "so",
        "we",
        "it",
        "this",
        "that",
        "in",
        "on",
        "for",
        "by",
        "with",
        "as",
        "at",
        "then",
    ]
)


class Judge(Protocol):
    name: str

    def verdicts(self, context: str, pairs: list[tuple[str, str]]) -> list[bool]:
        """For each (draft step, target step) written after `context` (the problem and the steps before):
        True when the draft step may be kept in place of the target's."""
        ...


_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[-+*/=<>^%()\u00d7\u00f7]")


def normalise(step: str) -> str:
    """Lower case, thousands separators dropped, then words, numbers and operators separated by one space (other
    punctuation and spacing dropped): "So, 2+3 = 5." and "so 2 + 3 = 5" are equal, "2 - 3" and "2 + 3" are not."""
    return " ".join(_TOKEN.findall(re.sub(r"(?<=\d),(?=\d{3})", "", step.lower())))


def numbers(step: str) -> list[float]:
    """The numbers in a step, in order ("1,440" -> 1440.0; "3.50" -> 3.5)."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(step)]


def content_words(step: str) -> set[str]:
    return set(_WORD.findall(step.lower())) - _STOPWORDS


class ExactJudge:
    name = "exact"

    def verdicts(self, context: str, pairs: list[tuple[str, str]]) -> list[bool]:
        return [normalise(d) == normalise(t) for d, t in pairs]


class OverlapJudge:
    """Same numbers in the same order and Jaccard(content words) >= min_overlap (two steps without words: equal
    by numbers alone)."""

    name = "overlap"

    def __init__(self, min_overlap: float = 0.5) -> None:
        if not 0.0 <= min_overlap <= 1.0:
            raise UserError(f"--judge-overlap must be in [0, 1], got {min_overlap}")
        self.min_overlap = min_overlap

    def agree(self, draft: str, target: str) -> bool:
        if numbers(draft) != numbers(target):
            return False
        a, b = content_words(draft), content_words(target)
        if not a and not b:
            return True
        return len(a & b) / len(a | b) >= self.min_overlap

    def verdicts(self, context: str, pairs: list[tuple[str, str]]) -> list[bool]:
        return [self.agree(d, t) for d, t in pairs]


ALIGNMENT_QUESTION = (
    "Two candidate next steps of a solution are given.\n\nProblem and steps so far:\n{context}\n\n"
    "Step A:\n{draft}\n\nStep B:\n{target}\n\n"
    "Do Step A and Step B say the same thing (same reasoning and the same numbers)? Answer yes or no."
)


class TargetJudge:
    """The target model answers ALIGNMENT_QUESTION for each pair; yes when logit(yes) > logit(no) at the first
    answer token (candidates "yes"/"Yes"/" yes" and the same for no: the larger logit of each side).

    The pairs are asked one after another through one KV cache: a question keeps the longest common token
    prefix with the question before it (the instruction, the problem and the steps so far) and feeds the rest,
    so a round's questions, and the next round's, cost their new tokens only. The logits are the same forward's
    as a prefill of the whole question, up to floating-point rounding of the split."""

    name = "target"

    def __init__(self, model, tokenizer, max_context_chars: int = 1500) -> None:
        self.model, self.tokenizer, self.max_context_chars = model, tokenizer, max_context_chars
        self.yes = self._first_ids(("yes", "Yes", " yes", " Yes"))
        self.no = self._first_ids(("no", "No", " no", " No"))
        self._cache = DynamicCache()
        self._cached: list[int] = []  # the tokens whose keys and values the cache holds, in order
        self.fed_tokens = 0  # tokens run through the target so far (what the shared prefix saves shows here)

    def _first_ids(self, words: tuple[str, ...]) -> list[int]:
        ids = {self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}
        return sorted(ids)

    def question(self, context: str, draft: str, target: str) -> list[int]:
        """The question's token ids (the chat-rendered ALIGNMENT_QUESTION), the context cut to its last
        `max_context_chars` characters."""
        text = ALIGNMENT_QUESTION.format(context=context[-self.max_context_chars :], draft=draft, target=target)
        return encode_prompt(self.tokenizer, text).tolist()

    @torch.inference_mode()
    def margins(self, context: str, pairs: list[tuple[str, str]]) -> list[float]:
        """logit(yes) - logit(no) at the answer position of each pair's question (> 0: yes)."""
        out = []
        for draft, target in pairs:
            ids = self.question(context, draft, target)
            # keep the shared prefix; feed at least the answer position, whose logits are read
            self._cache, keep = reuse_prefix(self._cache, self._cached, ids, feed_at_least=1)
            new = torch.tensor([ids[keep:]])
            logits = self.model(input_ids=new, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
            logits = logits.logits[0, -1].float()
            self._cached, self.fed_tokens = ids, self.fed_tokens + new.shape[1]
            out.append(float(logits[self.yes].max() - logits[self.no].max()))
        return out

    def verdicts(self, context: str, pairs: list[tuple[str, str]]) -> list[bool]:
        return [margin > 0 for margin in self.margins(context, pairs)]


class NumbersThenTargetJudge:
    """`numbers-target`: a pair whose numbers differ (in value or order) is rejected without a forward; the target
    judges the others (none asked when no pair is left)."""

    name = "numbers-target"

    def __init__(self, target_judge: TargetJudge) -> None:
        self.target_judge = target_judge

    def verdicts(self, context: str, pairs: list[tuple[str, str]]) -> list[bool]:
        asked = [i for i, (d, t) in enumerate(pairs) if numbers(d) == numbers(t)]
        said = self.target_judge.verdicts(context, [pairs[i] for i in asked])
        result = [False] * len(pairs)
        for i, verdict in zip(asked, said, strict=True):
            result[i] = verdict
        return result


JUDGES = ("overlap", "exact", "target", "numbers-target")


def make_judge(name: str, target_model=None, target_tokenizer=None, min_overlap: float = 0.5) -> Judge:
    if name == "exact":
        return ExactJudge()
    if name == "overlap":
        return OverlapJudge(min_overlap)
    if name in ("target", "numbers-target"):
        if target_model is None:
            raise ValueError(f"the {name} judge needs the target model and tokenizer")
        judge = TargetJudge(target_model, target_tokenizer)
        return judge if name == "target" else NumbersThenTargetJudge(judge)
    raise UserError(f"unknown judge '{name}': choose one of {', '.join(JUDGES)}")
