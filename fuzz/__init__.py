"""Mutation fuzzing of every parser family: each input in a forked child under a memory cap
and a time limit, classified accepted / rejected / crash / hang / oom (``python -m fuzz``)."""
