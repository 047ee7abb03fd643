"""Launchers: where a run's process runs, behind one interface (`base.Launcher`), registered by name.

The package's face: importing it registers every launcher module listed here. A new launcher is one
module with `@register_launcher("name")`, one import line below, and one row in the table of
tests/runs/test_launchers.py.
"""

from cldash.runs.launchers import local, ray_jobs, slurm  # noqa: F401  (each registers itself)
from cldash.runs.launchers.base import (
                                        LAUNCHERS,
                                        JobState,
                                        Launcher,
                                        Resources,
                                        for_run,
                                        is_local,
                                        logs,
                                        parse,
                                        register_launcher,
)

__all__ = ["LAUNCHERS", "JobState", "Launcher", "Resources", "for_run", "is_local", "logs", "parse",
           "register_launcher"]
