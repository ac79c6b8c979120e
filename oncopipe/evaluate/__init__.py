"""The evaluate stage's library: test-split metrics, plots, predictions."""
