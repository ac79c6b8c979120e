"""Image decoding: header sizes, reduced-scale JPEG decode, clear errors."""

import cv2
import numpy as np
import pytest

from oncopipe.imagefiles.images import ImageError, image_size, read_header, read_rgb, resize_hwc


def _write(path, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 128)], -1).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


def test_header_sizes(tmp_path):
    _write(tmp_path / "a.jpg", 300, 500)
    _write(tmp_path / "a.png", 46, 70)
    assert image_size(tmp_path / "a.jpg") == (300, 500)
    assert image_size(tmp_path / "a.png") == (46, 70)


def test_reduced_jpeg_decode_matches_full_decode(tmp_path):
    _write(tmp_path / "big.jpg", 1600, 2400)
    reduced = read_rgb(tmp_path / "big.jpg", min_side=200)
    assert reduced.shape == (3, 200, 300)  # decoded at 1/8 scale, never below min_side
    full = resize_hwc(read_rgb(tmp_path / "big.jpg").transpose(1, 2, 0).copy(), 200, 300)
    full = full.transpose(2, 0, 1)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 3.0


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        read_rgb(bad)


def test_jpeg_size_past_a_large_metadata_block(tmp_path):
    """Camera JPEGs carry EXIF/ICC blocks of hundreds of KiB before the frame header."""
    _write(tmp_path / "plain.jpg", 120, 200)
    data = (tmp_path / "plain.jpg").read_bytes()
    app = b"\xff\xe2" + (65535).to_bytes(2, "big") + b"\0" * 65533  # one full APP2 segment
    big = data[:2] + app * 3 + data[2:]
    (tmp_path / "exif.jpg").write_bytes(big)
    assert image_size(tmp_path / "exif.jpg") == (120, 200)
    assert read_rgb(tmp_path / "exif.jpg").shape == (3, 120, 200)  # still a valid JPEG


def test_jpeg_without_frame_header_is_named(tmp_path):
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10" + b"\0" * 14)
    with pytest.raises(ImageError, match="cut.jpg"):
        image_size(tmp_path / "cut.jpg")


def _rgb(h, w):
    return np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _opencv_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


@pytest.mark.parametrize("rows_per_strip", [1, 7, 96])
def test_uncompressed_rgb_tiff_pixels_are_the_files_bytes(tmp_path, rows_per_strip):
    """PCam's format: no decoder runs, and the result is what OpenCV decodes."""
    from PIL import Image, TiffImagePlugin
    rgb = _rgb(96, 96)
    path = tmp_path / "patch.tif"
    Image.fromarray(rgb).save(path, tiffinfo={TiffImagePlugin.ROWSPERSTRIP: rows_per_strip})
    assert read_header(path).raw_offset is not None
    np.testing.assert_array_equal(read_rgb(path), _opencv_rgb(path))
    np.testing.assert_array_equal(read_rgb(path), rgb.transpose(2, 0, 1))


@pytest.mark.parametrize("info", [{259: 5}, {274: 3}, {317: 2, 259: 5}])
def test_tiffs_needing_a_decoder_go_to_opencv(tmp_path, info):
    """Compressed (LZW), rotated (orientation), with a predictor: OpenCV decodes them."""
    from PIL import Image
    path = tmp_path / "other.tif"
    image = Image.fromarray(_rgb(40, 56))
    if info.get(259) == 5:
        image.save(path, compression="tiff_lzw", tiffinfo={k: v for k, v in info.items()
                                                           if k != 259})
    else:
        image.save(path, tiffinfo=info)
    assert read_header(path).raw_offset is None
    np.testing.assert_array_equal(read_rgb(path), _opencv_rgb(path))


def test_tiff_strips_past_the_end_are_not_read_raw(tmp_path):
    from PIL import Image
    path = tmp_path / "short.tif"
    Image.fromarray(_rgb(32, 32)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])  # the pixels no longer fit
    with pytest.raises(ImageError):
        read_rgb(path)
