"""The engine: one continual run, from a resolved configuration to rows in the store.

- `loop`: ContinualRun, the loop over tasks and steps, its evaluation and spectra, export of its adapters;
- `checkpoints`: the files a run writes at each task's end and reads back to continue;
- `rehearsal`: replay and EWC.

This face imports nothing, so that `cldash.engine.checkpoints` stays light for the dashboard's scheduler.
"""
