"""``lockgate image publish aws|gce|azure``: make a built image a launchable cloud image.

One module per cloud (``aws``, ``gce``, ``azure``), each with
``publish(manifest, dry_run=..., **options)``; ``common`` holds what they share
(manifest and artifact lookup, progress, the dry-run recorder, access-denied
messages, zero-block detection). The cloud SDKs are imported only inside the
cloud modules' publish paths, never by ``lockgate image --help`` nor by the
appliance.
"""
