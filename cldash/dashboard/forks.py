"""The Runs page's "What if…" form without Streamlit: where a finished run can fork, the changes its fields ask
for, what the form says about them, and the launch key that makes a double click one fork.

cldash.runs.lineage.fork makes the fork; the page passes in what it needs of that module and of the method
registry (both import torch, which the dashboard's plain-data modules do not load).
"""

from __future__ import annotations

import hashlib
import json

from cldash.core.errors import ConfigError, UserError
from cldash.core.options import worded

# The form's fields, in their order on the page; each has an error slot under it.
FORK_FIELDS = ("after_task", "method", "lr", "seed", "replay", "ewc_lambda", "other")
# What the fields are called, for their errors (an error names an option as the config does: 'lr').
FORK_FIELD_LABELS = {"after_task": "after task", "lr": "learning rate", "replay": "replay buffer size",
                     "ewc_lambda": "EWC lambda"}
NOTHING_CHANGED = "Nothing changed yet: this fork would repeat the parent's remaining tasks exactly."


def fork_points(kept: list[int], num_tasks: int | None) -> list[int]:
    """The tasks a run can fork after: those with a kept checkpoint (cldash.engine.checkpoints.available) but
    the last one (after it there is nothing left to train)."""
    return [t for t in kept if t < (num_tasks or 0)]


def no_fork_reason(parent: dict) -> str:
    """Why a run without a checkpoint before its last task cannot fork, and what to do instead."""
    config = parent["config"]
    why = (f"it ran with checkpoints {config['checkpoints']!r}" if "checkpoints" in config else
           "it ran before cldash kept checkpoints")
    return (f"Run #{parent['id']} kept no checkpoint before its last task ({why}), so it cannot fork; "
            "launch it again with checkpoints 'all' to fork after any task.")


def fork_intro(parent: dict, tasks: list[int]) -> list[str]:
    """The lines over the form: what a fork is, and which fork points the run's checkpoints leave."""
    lines = [f"A new run starts from #{parent['id']}'s state after the task you pick (its rows up to there "
             "are copied) and trains the remaining tasks with the options below."]
    if len(tasks) < (parent["num_tasks"] or 0) - 1:
        lines.append(f"Checkpoints kept after task{'s' * (len(tasks) > 1)} {', '.join(map(str, tasks))} only "
                     "(checkpoints 'all' keeps one after every task).")
    return lines


def fork_methods(methods, current: str) -> list[str]:
    """The methods a fork can switch to, the parent's own first, then the others by name."""
    return sorted(methods, key=lambda m: (m != current, m))


def fork_changes(parent: dict, fields: dict, other: str = "") -> dict:
    """The changes a "What if…" form asks for, as cldash.runs.lineage.fork takes them: each field of `fields` (run
    options: method, lr, replay, ewc_lambda, seed ...) whose value differs from the parent's config, then
    the options of `other`, a JSON object (which win over the fields; "method_options": {...} too). An
    empty lr keeps the parent's (or, for another method, that method's default). Raises ConfigError (one
    sentence, its field "other") for text that is not a JSON object."""
    config = parent["config"]
    changes = {}
    for key, value in fields.items():
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                continue
            try:   # "0.001" from a text field equals a stored 0.001; anything else goes to validation as is
                number = float(value)
            except ValueError:
                number = None
            if number is not None and config.get(key) is not None and number == config.get(key):
                continue
        if value != config.get(key):
            changes[key] = value
    if other.strip():
        try:
            extra = json.loads(other)
        except ValueError as exc:
            raise ConfigError(f"other options must be a JSON object such as {{\"batch_size\": 32}}; this text "
                              f"is not JSON ({exc.msg} at character {exc.pos}).", "other") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"other options must be a JSON object such as {{\"batch_size\": 32}} (got "
                              f"{type(extra).__name__}).", "other")
        changes.update(extra)
    return changes


def starts_on_merged_weights(parent: dict, changes: dict) -> bool:
    """Whether a fork with these changes starts a new method on the parent's merged weights (another
    method, other method options or another policy) instead of continuing the parent's method."""
    config = parent["config"]
    if changes.get("method", config["method"]) != config["method"]:
        return True
    options = {**(config.get("method_options") or {}), **(changes.get("method_options") or {})}
    return options != (config.get("method_options") or {}) or \
        ("policy" in changes and changes["policy"] != config.get("policy"))


def fork_preview(parent: dict, changes: dict | None, after: int, methods) -> tuple[str, str]:
    """What the form says before the fork starts, as (kind, text): ("info", ...) when the changes start a new
    method on the parent's merged weights (`methods`: the method registry, for the new method's label),
    ("caption", NOTHING_CHANGED) when nothing changed, ("", "") otherwise (`changes` None: the JSON options
    do not parse)."""
    if changes is not None and starts_on_merged_weights(parent, changes):
        new = changes.get("method", parent["config"]["method"])
        return "info", (f"{methods[new].label} starts on run #{parent['id']}'s merged weights after task {after}: "
                        "each adapted layer's effective weight there becomes its base weight, with a fresh adapter, "
                        "so its spectra measure the update since the fork. (The same method and options would go "
                        "on with the parent's own adapters and memories.)")
    if changes == {}:
        return "caption", NOTHING_CHANGED
    return "", ""


def fork_error(exc: UserError, changes: dict, fixed_at_fork) -> tuple[str, str]:
    """Where the form says why a fork did not start, and in which words: (field, message). A ConfigError goes
    under its own field (under the JSON options when it names none of the form's); any other refusal comes from
    the JSON options when they change what cannot change at a fork (`fixed_at_fork`:
    cldash.runs.lineage.FIXED_AT_FORK), else from the fork point. Under the form's own fields the
    message names the fields by their labels; the JSON options keep their names."""
    if isinstance(exc, ConfigError):
        field = exc.field if exc.field in FORK_FIELDS else "other"
    else:
        field = "other" if any(option in changes for option in fixed_at_fork) else "after_task"
    return field, str(exc) if field == "other" else worded(str(exc), FORK_FIELD_LABELS)


def fork_launch_key(parent_id: int, after_task: int, changes: dict) -> str:
    """One key per parent, fork point and changes: the same fork asked for twice (a double click) is one run."""
    digest = hashlib.sha1(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"fork:{parent_id}:{after_task}:{digest}"


def fork_started(parent_id: int, new_id: int, after: int, changes: dict) -> str:
    """What the Runs page says once a fork is queued."""
    return (f"Started run #{new_id} from #{parent_id}'s state after task {after}"
            + (f" with {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else " with the same options")
            + "; parent and fork are selected.")
