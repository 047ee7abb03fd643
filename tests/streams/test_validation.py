"""The validation split of a tuning trial (RunConfig.validation, Stream.hold_out): held-out training data,
never a test example, the same examples at every seed, and what the run then trains and scores."""

import pytest
import torch

from cldash.config import resolve
from cldash.engine.assembly import assemble
from cldash.streams.digits import digits_splits, normalize, rotate


def rows(x: torch.Tensor) -> set[tuple]:
    return {tuple(r.flatten().tolist()) for r in x}


@pytest.mark.parametrize("stream", ["digits-rotate", "digits-split", "digits-permute"])
def test_validation_never_overlaps_the_test_sets(stream):
    held = assemble(resolve({"stream": stream, "validation": 0.2}), with_method=False).stream
    plain = assemble(resolve({"stream": stream}), with_method=False).stream
    for h, p in zip(held.tasks + held.general, plain.tasks + plain.general, strict=True):
        val, train, test, full = rows(h.test.x), rows(h.train.x), rows(p.test.x), rows(p.train.x)
        assert not val & test, f"{h.name}: a validation example is a test example"
        assert val <= full and train <= full, f"{h.name}: validation and training come from the training data"
        assert not val & train, f"{h.name}: a validation example is also trained on"
        assert len(h.test) == round(0.2 * len(p.train)) and len(h.train) + len(h.test) == len(p.train)


def test_the_held_out_examples_are_the_same_at_every_seed_and_across_rotations():
    a = assemble(resolve({"stream": "digits-rotate", "validation": 0.2, "seed": 0}), with_method=False).stream
    b = assemble(resolve({"stream": "digits-rotate", "validation": 0.2, "seed": 7}), with_method=False).stream
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert torch.equal(ta.test.x, tb.test.x) and torch.equal(ta.train.y, tb.train.y)
    # the same digits are held out of every rotation: task 2's validation digits are task 1's, rotated
    train, _ = digits_splits()
    first = a.tasks[0].test.x
    upright = {tuple(normalize(rotate(train.x[i:i + 1], 36.0)).flatten().tolist()): i for i in range(len(train.y))}
    held = sorted(upright[tuple(r.flatten().tolist())] for r in first)
    second = rows(a.tasks[1].test.x)
    assert rows(normalize(rotate(train.x[held], 72.0))) == second


def test_a_share_that_leaves_nothing_to_train_is_refused():
    with pytest.raises(Exception, match="validation"):
        resolve({"validation": 0.9})
