"""The Admin UI on HTTPS 9090: login, status page, logout (see :mod:`.ui`)."""

from __future__ import annotations

from lockgate.runtime.admin.ui import AdminUi

__all__ = ["AdminUi"]
