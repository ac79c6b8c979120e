"""What training and evaluation share: the model zoo, the shard loader, running a
model (inference), balanced metrics with their intervals, worker settings."""
