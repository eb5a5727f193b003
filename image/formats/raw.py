"""raw: the assembled GPT disk itself (sparse on the host)."""

from __future__ import annotations

import os

from lockgate.image.build.context import Artifact, Context
from lockgate.image.formats import artifact


def write(context: Context) -> Artifact:
    disk = context.disk_image
    os.utime(disk, (context.source_date_epoch, context.source_date_epoch))
    return artifact("raw", disk)
