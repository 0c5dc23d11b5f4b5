"""On-demand generation for unmet filters: the strategy, not the wiring.

Modules: ``ports`` (the ``Target`` asked for and what the engine needs from the catalog),
``yields`` (measured yields and the strategy choice), ``settings`` (``OndemandSettings``),
``models`` (``ModelSet`` and its loading), ``strategies`` (generator adapters and the
on-demand gate list), ``nearby`` (``Unreachable`` and the nearby filters it names),
``engine`` (``OnDemand``), ``cli`` (``facecat ingest measure-yields`` and ``facecat ingest
backfill``). ``catalog.ingest_services`` builds the engine per app on the catalog's
database and storage and installs it as the supplier of ``catalog.web.unmet``; importing
this package loads neither torch nor the catalog.
"""
