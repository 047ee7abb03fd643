"""`skills`: a language stream of generated instruction-style tasks for a tiny GPT-2, offline.

A small vocabulary (digits, letters a-j, a few marks, one tag per skill) and a library of
generated skills. An example is one token sequence::

    <bos> [sort] 3 1 2 <sep> 1 2 3 <eos>

the instruction tag names the skill, the prompt ends with <sep>, and the answer (with <eos>) is
what the model must produce; the loss covers the answer only. A task's score is the exact-match
accuracy of the greedy answer, computed from one teacher-forced pass (greedy decoding emits the
whole answer exactly when every answer position's argmax is right given the right prefix),
with token accuracy beside it.

The backbone (`gpt2-tiny`) is pre-trained on the *general* skills (copy, reverse, max, min),
tagged, and on few-shot sequences of the *in-context* skills (first, last) shown without any
tag: two demonstrations, then a query whose answer is scored::

    <bos> [?] 4 7 2 <sep> 4 ; 9 1 <sep> 9 ; 5 3 8 <sep>  ->  5

So a run reports two general columns next to the stream's tasks: the pre-training skills
(general performance) and, with ``--stream-in-context``, the few-shot score on skills the model
was never told by name (in-context performance), the quantities SLICE and CoDyRA report on
TRACE as general and in-context ability.

Everything is generated from `random.Random(seed)`: the same seed gives the same examples.
Train and test examples come from different seeds, but some skills have few distinct inputs
(add_mod has 100), so a test example may also occur in training: the scores measure whether a
skill is learned and kept, not generalisation to unseen inputs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.base import Split, Stream, Task, register_stream

DIGITS = [str(i) for i in range(10)]
LETTERS = list("abcdefghij")


def _digits(rng: random.Random, lo: int = 2, hi: int = 6, alphabet=DIGITS) -> list[str]:
    return [rng.choice(alphabet) for _ in range(rng.randint(lo, hi))]


def _count(rng):
    target = rng.choice("012")
    xs = [rng.choice("012") for _ in range(rng.randint(3, 7))]
    return [target, ":", *xs], [str(xs.count(target))]


def _lookup(rng):
    keys = rng.sample(LETTERS, 3)
    values = [rng.choice(DIGITS) for _ in keys]
    q = rng.randrange(3)
    return [t for k, v in zip(keys, values) for t in (k, v)] + ["?", keys[q]], [values[q]]


def _add_mod(rng):
    a, b = rng.choice(DIGITS), rng.choice(DIGITS)
    return [a, b], [str((int(a) + int(b)) % 10)]


def _parity(rng):
    xs = _digits(rng, 3, 7, ["0", "1"])
    return xs, [str(xs.count("1") % 2)]


def _unary(fn: Callable[[list[str]], list[str]]):
    def gen(rng):
        xs = _digits(rng)
        return xs, fn(xs)
    return gen


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    generate: Callable[[random.Random], tuple[list[str], list[str]]]


SKILLS: dict[str, Skill] = {s.name: s for s in [
    Skill("copy", "repeat the digits", _unary(lambda xs: list(xs))),
    Skill("reverse", "the digits backwards", _unary(lambda xs: xs[::-1])),
    Skill("max", "the largest digit", _unary(lambda xs: [max(xs)])),
    Skill("min", "the smallest digit", _unary(lambda xs: [min(xs)])),
    Skill("first", "the first digit", _unary(lambda xs: [xs[0]])),
    Skill("last", "the last digit", _unary(lambda xs: [xs[-1]])),
    Skill("sort", "the digits in increasing order", _unary(sorted)),
    Skill("successor", "each digit plus one (9 -> 0)", _unary(lambda xs: [str((int(x) + 1) % 10) for x in xs])),
    Skill("add_mod", "a + b modulo 10", _add_mod),
    Skill("count", "how often the digit before ':' occurs after it", _count),
    Skill("parity", "parity of the number of 1s", _parity),
    Skill("lookup", "the value of the queried key in a key-value list", _lookup),
    Skill("repeat", "every digit twice", _unary(lambda xs: [x for x in xs for _ in range(2)])),
]}
GENERAL_SKILLS = ("copy", "reverse", "max", "min")      # tagged in pre-training: general performance
IN_CONTEXT_SKILLS = ("first", "last")                  # only ever shown untagged, few-shot
STREAM_SKILLS = tuple(s for s in SKILLS if s not in GENERAL_SKILLS + IN_CONTEXT_SKILLS)

SPECIAL = ["<pad>", "<bos>", "<sep>", "<eos>", ":", "?", ";", "[?]"]
VOCAB = SPECIAL + [f"[{s}]" for s in SKILLS] + DIGITS + LETTERS
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD, BOS, SEP, EOS = (TOKEN_ID[t] for t in ("<pad>", "<bos>", "<sep>", "<eos>"))
MAX_LEN = 64
IGNORE = -100


def encode(tokens: list[str]) -> list[int]:
    return [TOKEN_ID[t] for t in tokens]


def decode(ids) -> list[str]:
    return [VOCAB[int(i)] for i in ids]


def tagged_example(skill: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """(prompt, answer) tokens: <bos> [skill] input <sep> | answer <eos>."""
    x, y = SKILLS[skill].generate(rng)
    return ["<bos>", f"[{skill}]", *x, "<sep>"], [*y, "<eos>"]


def few_shot_example(skill: str, rng: random.Random, shots: int = 2) -> tuple[list[str], list[str]]:
    """(prompt, answer): `shots` untagged demonstrations separated by ';', then the query."""
    prompt = ["<bos>", "[?]"]
    for _ in range(shots):
        x, y = SKILLS[skill].generate(rng)
        prompt += [*x, "<sep>", *y, ";"]
    x, y = SKILLS[skill].generate(rng)
    return prompt + [*x, "<sep>"], [*y, "<eos>"]


def to_split(pairs: list[tuple[list[str], list[str]]]) -> Split:
    """Token pairs as (input_ids, labels), right-padded to MAX_LEN; labels only on the answer
    (position t is trained to predict token t + 1)."""
    x = torch.full((len(pairs), MAX_LEN), PAD, dtype=torch.long)
    y = torch.full((len(pairs), MAX_LEN), IGNORE, dtype=torch.long)
    for i, (p, a) in enumerate(pairs):
        seq = encode(p + a)
        if len(seq) > MAX_LEN:
            raise ValueError(f"example longer than {MAX_LEN} tokens: {' '.join(p + a)}")
        x[i, :len(seq)] = torch.tensor(seq)
        y[i, len(p) - 1:len(seq) - 1] = torch.tensor(encode(a))
    return Split(x, y)


def skill_split(skill: str, n: int, seed: int, few_shot: int = 0) -> Split:
    rng = random.Random(f"{skill}:{seed}")      # str seeds hash deterministically in `random`
    make = (lambda: few_shot_example(skill, rng, few_shot)) if few_shot else (lambda: tagged_example(skill, rng))
    return to_split([make() for _ in range(n)])


def mixture_split(skills: list[str], n: int, seed: int, few_shot: int = 0) -> Split:
    """`n` examples drawn evenly from several skills (one example per skill in turn)."""
    per = [skill_split(s, -(-n // len(skills)), seed, few_shot) for s in skills]
    x = torch.stack([per[i % len(skills)].x[i // len(skills)] for i in range(n)])
    y = torch.stack([per[i % len(skills)].y[i // len(skills)] for i in range(n)])
    return Split(x, y)


def trim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns after every row's last labelled position (most examples are far shorter than
    the padded width; attention costs grow with it). Right padding: nothing before them changes."""
    positions = torch.arange(1, y.shape[1] + 1, device=y.device)
    width = max(1, int(((y != IGNORE) * positions).max()))
    return x[:, :width], y[:, :width]


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def answer_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Exact match of the greedy answer (every answer token right) and token accuracy."""
    mask = labels != IGNORE
    right = (logits.argmax(-1) == labels) & mask
    exact = (right | ~mask).all(dim=1).float().mean()
    return {"exact_match": float(exact), "token_accuracy": float(right.sum() / mask.sum().clamp(min=1))}


class LanguageStream(Stream):
    """Shared by every causal-LM stream: answer-only loss, exact match and token accuracy."""

    backbone_kinds = ("causal-lm",)
    metrics = ("exact_match", "token_accuracy")

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        self.primary_metric = "exact_match"

    def loss(self, model, batch: Split, task: Task) -> torch.Tensor:
        x, y = trim(batch.x, batch.y)
        return lm_loss(model(x), y)

    @torch.no_grad()
    def evaluate(self, model, task: Task, batch_size: int = 1024) -> dict[str, float]:
        x, y = task.test.x, task.test.y
        totals, n = {}, 0
        for i in range(0, len(x), batch_size):
            xb, yb = trim(x[i:i + batch_size], y[i:i + batch_size])
            s = answer_scores(model(xb), yb)
            k = len(xb)
            for key, v in s.items():
                totals[key] = totals.get(key, 0.0) + v * k
            n += k
        return {k: v / n for k, v in totals.items()}


@dataclass
class SkillsOptions:
    skills: list[str] = option(["sort", "successor", "add_mod", "lookup"],
                               f"the new skills, one task each, in training order (from: {', '.join(STREAM_SKILLS)})")
    train_examples: int = option(2000, "training examples generated per task", low=16, high=1_000_000)
    test_examples: int = option(300, "test examples per task (and per general task)", low=10, high=100_000)
    in_context: bool = option(True, "also score few-shot prompts of skills only ever seen in context "
                                    "(in-context performance, a second general column)")
    data_seed: int = option(0, "seed of the generated examples (train and test examples come from two seeds "
                                 "derived from it; pre-training from another)", low=0, high=2**31 - 1)

    def check(self, prefix: str) -> None:
        if not self.skills:
            raise ConfigError(f"{prefix}.skills needs at least one skill.", f"{prefix}.skills")
        for s in self.skills:
            if s not in SKILLS:
                raise ConfigError(f"{prefix}.skills: unknown skill {s!r}; choose from {', '.join(STREAM_SKILLS)}.",
                                  f"{prefix}.skills")
            if s in GENERAL_SKILLS + IN_CONTEXT_SKILLS:
                raise ConfigError(f"{prefix}.skills: {s!r} is a pre-training skill (general performance); "
                                  f"choose new skills from {', '.join(STREAM_SKILLS)}.", f"{prefix}.skills")
        if len(set(self.skills)) != len(self.skills):
            raise ConfigError(f"{prefix}.skills lists a skill twice.", f"{prefix}.skills")


@register_stream
class SkillsStream(LanguageStream):
    name = "skills"
    label = "Generated skills (language)"
    summary = ("A tiny GPT-2 pre-trained on general skills (copy, reverse, max, min) learns new instruction-"
               "tagged skills one after the other; the pre-training skills and few-shot in-context prompts are "
               "scored throughout as general and in-context performance.")
    Options = SkillsOptions
    default_backbone = "gpt2-tiny"

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        train_seed, test_seed = options.data_seed * 2 + 1, options.data_seed * 2 + 2
        for skill in options.skills:
            self.tasks.append(Task(f"{skill}: {SKILLS[skill].description}",
                                   train=skill_split(skill, options.train_examples, train_seed),
                                   test=skill_split(skill, options.test_examples, test_seed)))
        self.general = [Task("general: pre-training skills", kind="general",
                             train=mixture_split(list(GENERAL_SKILLS), options.train_examples, train_seed),
                             test=mixture_split(list(GENERAL_SKILLS), options.test_examples, test_seed))]
        if options.in_context:
            self.general.append(Task("in-context: first/last from 2 demonstrations", kind="general",
                                     test=mixture_split(list(IN_CONTEXT_SKILLS), options.test_examples, test_seed,
                                                        few_shot=2)))

    def reordered(self, order: list[int]) -> dict:
        """The stream options that train the same skills in `order` (positions in the current order)."""
        return {"skills": [self.options.skills[i] for i in order]}
