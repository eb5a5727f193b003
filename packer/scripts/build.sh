#!/bin/sh
# Packer's build step: `lockgate image build` with the template's variables
# (passed as LOCKGATE_* environment variables by the shell-local provisioner).
# With LOCKGATE_MANIFEST set, an image built before is published instead and
# nothing is built.
set -eu
if [ -n "${LOCKGATE_MANIFEST:-}" ]; then
    echo "packer: publishing the build of $LOCKGATE_MANIFEST (no build)"
    exit 0
fi
set -- "$LOCKGATE" image build --formats "$LOCKGATE_FORMATS" --out "$LOCKGATE_OUT" \
    --cache-dir "$LOCKGATE_CACHE_DIR"
[ -n "${LOCKGATE_VERSION:-}" ] && set -- "$@" --version "$LOCKGATE_VERSION"
profile=${LOCKGATE_PROFILE:-}
if [ -n "${LOCKGATE_FIRMWARE:-}" ]; then
    # The profile with another firmware: a copy in the output folder whose two
    # relative paths (lockgate.source, lockgate.constraints) are made absolute.
    mkdir -p "$LOCKGATE_OUT"
    # lockgate's own interpreter (it has PyYAML): the one in the command's #! line
    python=$(head -n 1 "$(command -v "$LOCKGATE")" | sed 's/^#! *//')
    variant="$LOCKGATE_OUT/packer-profile-$LOCKGATE_FIRMWARE.yaml"
    $python - "$profile" "$LOCKGATE_FIRMWARE" "$variant" <<'PY'
import sys
from pathlib import Path

import yaml

from lockgate.image.build.cli import DEFAULT_PROFILE

source = Path(sys.argv[1]) if sys.argv[1] else DEFAULT_PROFILE
data = yaml.safe_load(source.read_text())
data["firmware"] = sys.argv[2]
section = data.setdefault("lockgate", {})
for key, default in (("source", "../.."), ("constraints", "../../constraints.txt")):
    section[key] = str((source.parent / section.get(key, default)).resolve())
Path(sys.argv[3]).write_text(yaml.safe_dump(data, sort_keys=False))
PY
    profile=$variant
fi
[ -n "$profile" ] && set -- "$@" --profile "$profile"
echo "packer: $*"
exec "$@"
