"""What every stage runs: errors, limits, settings and params, the dataset contract,
the manifest and the typed cards, atomic writes, logging, timing, provenance."""
