"""On-demand generation for unmet filters (issue 5): the strategy, not the wiring.

Modules: ``ports`` (the ``Target`` asked for and what the engine needs from the catalog),
``yields`` (measured yields and the strategy choice), ``strategies`` (generator
adapters), ``engine`` (``OnDemand``), ``cli`` (``facecat ingest measure-yields`` and
``facecat ingest backfill``). ``catalog.ingest_services`` builds the engine per app on the
catalog's database and storage and installs it as the supplier of ``catalog.web.unmet``;
importing this package loads neither torch nor the catalog.
"""
