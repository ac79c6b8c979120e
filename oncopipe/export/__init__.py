"""Exports of a prepared, split dataset to the formats other toolkits read.

Every format is one module with ``write(source, out_dir, params) -> dict`` (the counts it
wrote); :mod:`oncopipe.export.source` gives them the samples of the shards' split (never
re-decided here) and :mod:`oncopipe.export.provenance` the ``export.json`` and
``samples.csv`` every format folder carries. Nothing here knows one dataset: layout, class
names and spacing come from the manifest.
"""
