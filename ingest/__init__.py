"""Making faces: generators, the ingest pipeline and its scheduling.

``ingest`` may import ``analysis`` (to annotate what it generates) but never ``catalog``,
so a generator can be run and tested without a database or a Flask app.
"""
