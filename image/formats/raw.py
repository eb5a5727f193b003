"""raw: the assembled GPT disk itself (sparse on the host)."""

from __future__ import annotations

import os

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact, sha256_state


def write(context: Context) -> Artifact:
    disk = context.disk_image
    os.utime(disk, (context.source_date_epoch, context.source_date_epoch))
    # Hashed through sha256_state so the VHD (these bytes + a footer) continues from it.
    return artifact("raw", disk, sha256_state(disk).hexdigest())
