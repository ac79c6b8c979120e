"""Thin DVC stage scripts: parse the dataset name, load params, call the library, log.

Run as ``python -m stages.<name> <dataset>`` from the repository root, so that the code of
the tree being reproduced is imported (``-m`` puts the working directory first on
``sys.path``; DVC's queued experiments run in a copy of the tree).
"""
