"""num_workers: -1 resolves per machine; explicit counts are kept; CUDA gets pinning+prefetch."""

from __future__ import annotations

import pytest

from oncopipe.core.config import TrainParams
from oncopipe.learn.workers import AUTO, MAX_WORKERS, loader_options, resolve_workers


def test_default_is_auto_and_validated() -> None:
    assert TrainParams().num_workers == AUTO
    with pytest.raises(ValueError, match="num_workers"):
        TrainParams(num_workers=-2)  # validated on construction


def test_auto_on_cpu_reads_in_process() -> None:
    assert resolve_workers(AUTO, cuda=False) == 0
    assert loader_options(AUTO, cuda=False) == {"num_workers": 0, "pin_memory": False}


def test_auto_on_cuda_uses_workers_pinning_and_prefetch() -> None:
    opts = loader_options(AUTO, cuda=True)
    assert 1 <= opts["num_workers"] <= MAX_WORKERS
    assert opts["pin_memory"] and opts["persistent_workers"] and opts["prefetch_factor"] >= 2


def test_explicit_count_is_kept() -> None:
    assert resolve_workers(3, cuda=False) == 3
    assert loader_options(0, cuda=True) == {"num_workers": 0, "pin_memory": True}
