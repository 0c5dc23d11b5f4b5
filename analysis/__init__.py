"""Face analysis: detection, age/gender estimation and model weights.

This package imports neither ``catalog`` nor ``ingest`` so that it can be used (and
tested) on its own, e.g. by the evaluation command on a folder of photos.
"""
