"""``make bench``: lockgate against its peers, measured the way BENCHMARKING.md says.

One module per benchmark (:mod:`.runtime` proxy vs HAProxy, :mod:`.firstboot`,
:mod:`.image`) over small shared helpers (:mod:`.procstat` for CPU/RSS from
``/proc``, :mod:`.wrk` for the load generator, :mod:`.servers` for the
processes under test, :mod:`.report` for ratios, tables and the JSON line).
The entry point is :mod:`lockgate.bench`.
"""
