"""IDX reader: round trips and clear errors on malformed files."""

import gzip

import numpy as np
import pytest

from glminterp.data import IDXFormatError, load_mnist_idx, read_idx, write_idx


def _write_pair(folder, n_img=5, n_lab=5, side=4, gz=False, rng=None):
    rng = rng or np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n_img, side, side), dtype=np.uint8)
    labs = rng.integers(0, 10, size=n_lab, dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", imgs)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", labs)
    return imgs, labs


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_dtypes(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    back = read_idx(write_idx(tmp_path / "a.idx", arr))
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == np.dtype(dtype)


def test_header_is_standard_big_endian(tmp_path):
    write_idx(tmp_path / "l", np.array([7, 2, 1], dtype=np.uint8))
    raw = (tmp_path / "l").read_bytes()
    # magic 0x00000801 (ubyte, 1 dim), count 3 big-endian, then the bytes
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx_round_trip(tmp_path, gz):
    imgs, labs = _write_pair(tmp_path, gz=gz)
    ds = load_mnist_idx(tmp_path)
    assert ds.images.shape == (5, 1, 4, 4)
    np.testing.assert_allclose(ds.images.numpy()[:, 0], imgs / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.labels.numpy(), labs)
    assert ds.ids.tolist() == [f"mnist-train-{i}" for i in range(5)]
    assert ds.classes == tuple(str(i) for i in range(10))


def test_truncated_file(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 4, 4), dtype=np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(IDXFormatError, match=r"truncated.*48 data bytes, found 43"):
        read_idx(tmp_path / "x")


def test_trailing_bytes(tmp_path):
    write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes() + b"\x00")
    with pytest.raises(IDXFormatError, match="trailing bytes"):
        read_idx(tmp_path / "x")


def test_truncated_gzip(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((30, 4, 4), dtype=np.uint8))
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IDXFormatError, match="gzip"):
        read_idx(tmp_path / "x.gz")


@pytest.mark.parametrize(
    "header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"]
)
def test_wrong_magic(tmp_path, header):
    (tmp_path / "x").write_bytes(header + b"\x00\x00\x00\x01\x05")
    with pytest.raises(IDXFormatError, match="bad magic number"):
        read_idx(tmp_path / "x")


def test_mismatched_counts(tmp_path):
    _write_pair(tmp_path, n_img=5, n_lab=4)
    with pytest.raises(IDXFormatError, match="has 5 images but .* has 4 labels"):
        load_mnist_idx(tmp_path)


def test_labels_out_of_range(tmp_path):
    _write_pair(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2, 3, 4, 11], dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="outside 0..9"):
        load_mnist_idx(tmp_path)


def test_images_must_be_3d(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 16), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match=r"expected \(N, side, side\)"):
        load_mnist_idx(tmp_path)


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path)


def test_gzip_detected_by_content(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "plain", arr)
    (tmp_path / "compressed-no-suffix").write_bytes(gzip.compress((tmp_path / "plain").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed-no-suffix"), arr)
