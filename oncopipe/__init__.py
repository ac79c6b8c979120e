"""oncopipe: public cancer-imaging datasets -> ML-ready shards -> trained, evaluated models."""

__version__ = "0.1.0"
