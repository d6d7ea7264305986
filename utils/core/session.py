"""The session clock: Kaggle stops a session after 12 hours, so long work stops itself before that, at an epoch
boundary, with its checkpoints written, and says how to go on ("paused"), instead of being killed mid-epoch."""
from __future__ import annotations

import os
import time

ENV = "ECG_SESSION_START"  # set once by the first process of a session; notebooks and torchrun inherit it
PAUSED = "paused: continue in a new session with this session's output attached (the run resumes where it stopped)"


class SessionPaused(RuntimeError):
    """Work stopped cleanly before the session's limit; everything done so far is saved."""


def session_start() -> float:
    """When this session began (the first call in the process tree, recorded in the environment)."""
    if ENV not in os.environ:
        os.environ[ENV] = repr(time.time())
    return float(os.environ[ENV])


def deadline(hours: float) -> float | None:
    """The time by which work must have stopped (None: no limit)."""
    return session_start() + hours * 3600 if hours and hours > 0 else None


def time_is_up(limit: float | None, next_seconds: float = 0.0) -> bool:
    """Whether work expected to take next_seconds would end after the limit."""
    return limit is not None and time.time() + next_seconds > limit


def paused(what: str, next_seconds: float = 0.0) -> SessionPaused:
    return SessionPaused(f"{PAUSED}; stopped before {what} (expected {next_seconds / 60:.0f} min) at the session "
                         f"limit (session_hours)")
