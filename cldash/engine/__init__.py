"""The engine: one continual run, from a resolved configuration to rows in the store.

- `loop`: ContinualRun, the loop over tasks and steps;
- `assembly`: the one function that assembles backbone + stream + method into a model;
- `evaluation`: every task scored, the rows of the accuracy matrix and the anytime scores;
- `precision`: the run's precision (autocast, float32 master weights, fp16's gradient scaler, fallbacks);
- `readouts`: the spectra of the method's updates and its scalars, logged every spectra interval;
- `rehearsal`: replay and EWC, and the hooks through which the loop calls them;
- `checkpoints`: the files a run writes at each task's end and reads back to continue;
- `adapters`: a finished run's adapters, saved at its end and loaded back to export.

This face imports nothing, so that `cldash.engine.checkpoints` stays light for the dashboard's scheduler.
"""
