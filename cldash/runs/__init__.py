"""Runs as processes: launch, queue, cancel and reconcile, checkpoints resumed and forked, sweeps, launchers."""
