"""A finished run's adapters: the file its process writes at the end, and the model rebuilt from it.

The file holds what the run added to the pre-trained backbone (the method's state_dict) and every head that
trained; `load_adapted_model` assembles the run's model afresh (cldash.engine.assembly) and loads it back,
so `cldash export` and the PEFT exporter (cldash.methods.peft_format) read a run without its checkpoints.
The file is kept at the run's artifact location (cldash.store.artifacts), so any machine can export the run.
"""

from __future__ import annotations

import io

import torch

from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.engine.assembly import assemble
from cldash.engine.loop import ContinualRun
from cldash.store import Store


def save_adapters(crun: ContinualRun, store: Store, run_id: int) -> str:
    """The run's final state beyond the pre-trained backbone: what the method added (its state_dict)
    and every head that trained (a class-incremental stream's new head, the pre-trained classifier
    with --train-head). Written atomically to the run's artifact location; `load_adapted_model` rebuilds the
    run's model from it. Returns where it is."""
    trained = {id(p) for p in crun.head_params if p.requires_grad}
    heads = {n: p.detach().cpu().clone() for n, p in crun.model.named_parameters() if id(p) in trained}
    files = store.artifacts(run_id)
    path = files.adapter_file(run_id)
    files.write(path, lambda fh: torch.save({"method": crun.method.state_dict(), "heads": heads}, fh))
    return path


def saved_adapters(store: Store, run_id: int) -> dict | None:
    """What `save_adapters` wrote for the run ({"method": state_dict, "heads": {name: tensor}}), None if nothing."""
    files = store.artifacts(run_id)
    try:
        data = files.read(files.adapter_file(run_id))
    except FileNotFoundError:
        return None
    except OSError as exc:   # a location this machine cannot reach (no network, no credentials)
        raise UserError(f"cannot read run {run_id}'s saved adapters at {files.where(files.adapter_file(run_id))} "
                        f"({exc.strerror or exc}).") from None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_adapted_model(store: Store, run_id: int):
    """A finished run's final model, rebuilt on CPU from the pre-trained backbone and its saved state:
    (resolved config, stream, model (backbones.task_model), method)."""
    run = store.get_run(run_id)
    saved = saved_adapters(store, run_id) if run["status"] == "finished" else None
    if saved is None:
        raise UserError(f"run {run_id} has no saved adapters (it is {run['status']}); only runs that finished "
                        "since adapters are saved can be exported this way.")
    resolved = resolve(run["config"])
    parts = assemble(resolved)
    parts.method.load_state_dict(saved["method"])
    params = dict(parts.model.named_parameters())
    with torch.no_grad():
        for name, value in saved["heads"].items():
            params[name].copy_(value)
    return resolved, parts.stream, parts.model.eval(), parts.method
