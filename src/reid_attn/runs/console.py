"""A quiet console: a run prints reid-attn's own lines, the split table, the progress bar and
the result line, not third-party chatter.

Only known, harmless messages are hidden: each warning by its message and category (any other
warning still shows), and Lightning's informational log lines (accelerator found, checkpoint
restored, tips); Lightning's warnings are not log lines and still show.
"""

from __future__ import annotations

import logging
import warnings

#: ``(message regex, category)`` of third-party warnings that say nothing about the run.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # Lightning's pytree helper on torch >= 2.10; nothing for a user to change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
#: Loggers whose INFO lines ("GPU available", "Seed set to", "Restoring states", the
#: litlogger tip) are hidden; their warnings and errors still show.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")


def quiet_third_party() -> None:
    """Hide :data:`KNOWN_WARNINGS` and the INFO lines of :data:`CHATTY_LOGGERS` in this
    process (DDP processes started from it inherit the setting through the entry point)."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
