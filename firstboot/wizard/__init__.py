"""The console initial-configuration wizard (``z-initial-config``) and ``z-reset-password``.

Layout: ``questions`` (the questions as data, and their validators),
``prompter`` (terminal IO and the two answer sources: a person or a replay
file), ``flow`` (the steps), ``replay`` (the replay file format), ``finish``
(applying the answers, and the user-data printed at the end), ``reset``
(``z-reset-password``), ``cli`` (the click commands and console entry points).
"""

from __future__ import annotations

from .cli import main, reset_password_main

__all__ = ["main", "reset_password_main"]
