"""Errors a user can act on.

Every error that reaches a user is one sentence that names what is wrong and what to do
("rank 64 is larger than layer vit.layers.0.attention.q_proj (64 x 64); choose a rank of at
most 64"). The CLI prints it and exits with code 2; the dashboard shows it in an error box.
"""


class UserError(Exception):
    """A problem with what the user asked for (bad input, a missing file, a store that cannot be opened)."""


class ConfigError(UserError, ValueError):
    """An invalid run-configuration value. `field` names the offending field (for forms)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RunFailed(Exception):
    """A run stopped itself (diverged, say); the message is stored as the run's error."""


class StoreWriteError(UserError):
    """A write the run store refused (a read-only store, a full disk). `reason` is the cause on its own
    ("the disk is full (sqlite3: database or disk is full)"), for messages that name the run."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
