#!/bin/sh
# Packer's publish step: `lockgate image publish <cloud>` with the template's
# variables (LOCKGATE_* environment variables). Empty variables are left out, so
# each option keeps lockgate's default; lists are comma-separated.
set -eu
cloud=$1
manifest=${LOCKGATE_MANIFEST:-$LOCKGATE_OUT/manifest.json}
set -- "$LOCKGATE" image publish "$cloud" --manifest "$manifest"
opt() {  # opt FLAG VALUE: add "FLAG VALUE" when VALUE is set
    if [ -n "$2" ]; then set_args="$set_args $1 $2"; fi
}
flag() {  # flag FLAG true|false
    if [ "$2" = true ]; then set_args="$set_args $1"; fi
}
set_args=""
flag --dry-run "${LOCKGATE_DRY_RUN:-false}"
opt --name "${LOCKGATE_NAME:-}"
case $cloud in
aws)
    opt --region "${LOCKGATE_REGION:-}"
    flag --via-s3 "${LOCKGATE_VIA_S3:-false}"
    opt --bucket "${LOCKGATE_BUCKET:-}"
    opt --copy-to-regions "${LOCKGATE_COPY_TO_REGIONS:-}"
    for account in $(echo "${LOCKGATE_SHARE_WITH:-}" | tr ',' ' '); do
        opt --share-with "$account"
    done
    flag --public "${LOCKGATE_PUBLIC:-false}"
    ;;
gce)
    opt --project "${LOCKGATE_PROJECT:-}"
    opt --bucket "${LOCKGATE_BUCKET:-}"
    opt --family "${LOCKGATE_FAMILY:-}"
    ;;
azure)
    opt --subscription "${LOCKGATE_SUBSCRIPTION:-}"
    opt --resource-group "${LOCKGATE_RESOURCE_GROUP:-}"
    opt --location "${LOCKGATE_LOCATION:-}"
    opt --storage-account "${LOCKGATE_STORAGE_ACCOUNT:-}"
    opt --gallery "${LOCKGATE_GALLERY:-}"
    opt --gallery-image "${LOCKGATE_GALLERY_IMAGE:-}"
    ;;
*)
    echo "publish.sh: unknown cloud $cloud" >&2
    exit 2
    ;;
esac
# Values come from Packer variables (names, regions, ids): no spaces to keep.
# shellcheck disable=SC2086
set -- "$@" $set_args
echo "packer: $*"
exec "$@"
