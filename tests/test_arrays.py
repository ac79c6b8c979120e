"""ArrayWriter: the .npy it writes loads with numpy; failures leave nothing behind."""

import numpy as np
import pytest

from oncopipe.ingest.arrays import ArrayWriter


def test_round_trip_and_memmap(tmp_path):
    path = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    samples = [rng.random((1, 4, 5), dtype=np.float32).astype(np.float16) for _ in range(7)]
    with ArrayWriter(path, (1, 4, 5), np.float16) as writer:
        indices = [writer.append(s) for s in samples]
    assert indices == list(range(7))
    loaded = np.load(path, mmap_mode="r")
    assert loaded.shape == (7, 1, 4, 5) and loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, np.stack(samples))


def test_empty_array_is_valid(tmp_path):
    path = tmp_path / "empty.npy"
    with ArrayWriter(path, (3, 2), "uint8"):
        pass
    assert np.load(path).shape == (0, 3, 2)


def test_wrong_shape_names_file(tmp_path):
    path = tmp_path / "x.npy"
    with pytest.raises(ValueError, match="x.npy"), ArrayWriter(path, (2, 2), "uint8") as w:
        w.append(np.zeros((3, 3), np.uint8))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed too


def test_failure_keeps_previous_output(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(3))
    with pytest.raises(RuntimeError), ArrayWriter(path, (1,), "int64") as w:
        w.append(np.array([5]))
        raise RuntimeError("boom")
    np.testing.assert_array_equal(np.load(path), np.arange(3))
