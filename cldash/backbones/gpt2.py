"""A tiny GPT-2 for the `skills` language stream, built from a transformers config and pre-trained
in-project.

transformers' GPT2LMHeadModel with a small config (width 64, 2 blocks, 4 heads, 64 positions, a
41-token vocabulary: about 110k parameters). Its linears are transformers ``Conv1D`` (weight
stored transposed), which the adapter layer handles. It is pre-trained in-project on the
*general* skills of cldash.streams.skills (copy, reverse, max, min; each prompt tagged with its
skill) mixed with untagged few-shot sequences of the *in-context* skills (first, last). Other
options than the defaults are pre-trained on first use and cached, exactly like the tiny ViT.
Measured on the reference machine (2 cores, one thread): 2,000 steps in about 61 s, 0.94 exact
match on the general mixture's test split and 0.48 on the few-shot first/last prompts (a choice
between two answers: in-context induction is barely learned at this size). The weights of the
default options ship with the package (cldash/backbones/weights/gpt2-tiny.*, made by `cldash
pretrain --backbone gpt2-tiny`); their record holds the scores of the copy in use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cldash.backbones.base import Backbone, load_pretrained
from cldash.backbones.weights import make_record, one_thread
from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.skills import (
    BOS,
    EOS,
    GENERAL_SKILLS,
    IN_CONTEXT_SKILLS,
    MAX_LEN,
    VOCAB,
    LanguageStream,
    Task,
    lm_loss,
    mixture_split,
    trim,
)

# Every linear of a GPT-2 block: the fused q/k/v projection, the attention output, the MLP pair.
GPT2_TARGETS = ["c_attn|c_proj|c_fc"]
PRETRAIN_POOL = 6000       # generated examples per pre-training skill (seed 0: never a stream's seed)


@dataclass
class GPT2TinyOptions:
    n_embd: int = option(64, "width of the transformer", low=8, high=2048)
    n_layer: int = option(2, "number of transformer blocks", low=1, high=48)
    n_head: int = option(4, "attention heads (must divide n_embd)", low=1, high=64)
    pretrain_steps: int = option(2000, "optimizer steps of pre-training on the general mixture", low=1,
                                 high=1_000_000)
    pretrain_lr: float = option(3e-3, "peak learning rate of pre-training (one-cycle schedule)",
                                low=0.0, low_open=True, high=1.0)
    pretrain_batch: int = option(64, "batch size of pre-training", low=1, high=4096)
    in_context_share: float = option(0.25, "share of pre-training batches made of untagged few-shot sequences "
                                           "(what the in-context score measures)", low=0.0, high=1.0)
    seed: int = option(0, "seed of the pre-training (shared by every run, whatever the run's seed)", low=0,
                       high=2**31 - 1)

    def check(self, prefix: str) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"{prefix}.n_head {self.n_head} must divide {prefix}.n_embd {self.n_embd}.",
                              f"{prefix}.n_head")


def _config(o: GPT2TinyOptions):
    from transformers import GPT2Config  # deferred: loads transformers' model code

    return GPT2Config(vocab_size=len(VOCAB), n_positions=MAX_LEN, n_embd=o.n_embd, n_layer=o.n_layer,
                      n_head=o.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      # no padding warning: right padding never needs a mask here
                      bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None,
                      tie_word_embeddings=False)   # lm_head its own weight: the pre-trained head (--train-head)


def build_net(o: GPT2TinyOptions):
    from transformers import GPT2LMHeadModel  # deferred: loads transformers' model code

    return GPT2LMHeadModel(_config(o))


def _features(net, x: torch.Tensor) -> torch.Tensor:
    return net.transformer(input_ids=x).last_hidden_state      # (N, T, n_embd)


def _logits(net, x: torch.Tensor) -> torch.Tensor:
    # Right padding and a causal mask: no real token ever attends to a pad, so no attention mask
    # is needed (and the fused attention path stays the fast one).
    return net(input_ids=x).logits                              # (N, T, vocab)


RECIPE = "adamw-onecycle-clip1-pool6000-trim-v2"


def scores(net) -> dict[str, float]:
    """Exact match on the held-out general skills and on few-shot first/last prompts, scored on the
    same examples (seed 2) as the skills stream's general columns."""
    net.eval()
    scorer = LanguageStream(None, None)
    model = lambda x: _logits(net, x)  # noqa: E731
    general = scorer.evaluate(model, Task("general", test=mixture_split(list(GENERAL_SKILLS), 300, seed=2)))
    in_context = scorer.evaluate(model, Task("in-context", test=mixture_split(list(IN_CONTEXT_SKILLS), 300,
                                                                               seed=2, few_shot=2)))
    return {"general_exact_match": general["exact_match"], "in_context_exact_match": in_context["exact_match"]}


def pretrain(o: GPT2TinyOptions) -> tuple[dict, dict]:
    """Train a fresh tiny GPT-2 on the general mixture on one CPU thread; return its state dict and record."""
    tagged = mixture_split(list(GENERAL_SKILLS), PRETRAIN_POOL * len(GENERAL_SKILLS), seed=0)
    shots = mixture_split(list(IN_CONTEXT_SKILLS), PRETRAIN_POOL * len(IN_CONTEXT_SKILLS), seed=0, few_shot=2)
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(o.seed)
        net = build_net(o)
        g = torch.Generator().manual_seed(o.seed)
        opt = torch.optim.AdamW(net.parameters(), lr=o.pretrain_lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.pretrain_lr, total_steps=o.pretrain_steps,
                                                    pct_start=0.1)
        n_shots = int(round(o.pretrain_batch * o.in_context_share))
        start = time.perf_counter()
        net.train()
        for _ in range(o.pretrain_steps):
            i = torch.randint(len(tagged), (o.pretrain_batch - n_shots,), generator=g)
            j = torch.randint(len(shots), (n_shots,), generator=g)
            x, y = trim(torch.cat([tagged.x[i], shots.x[j]]), torch.cat([tagged.y[i], shots.y[j]]))
            loss = lm_loss(_logits(net, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
        seconds = time.perf_counter() - start
        result = scores(net)
    return net.state_dict(), make_record("gpt2-tiny", o, RECIPE, _config(o).to_dict(), result, seconds)


def load(o: GPT2TinyOptions) -> Backbone:
    net, weights = load_pretrained("gpt2-tiny", o, RECIPE, pretrain, build_net)
    return Backbone(name="gpt2-tiny", net=net, kind="causal-lm", default_targets=list(GPT2_TARGETS),
                    hidden_size=o.n_embd, num_labels=net.config.vocab_size, features=_features, logits=_logits,
                    info=weights.summary(), head_modules=("lm_head",))
