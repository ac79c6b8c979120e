"""Real files through the readers: every file read right, or set aside with its reason.

The corpus: pydicom's own test files and the ``pydicom-data`` package (dev extra), nibabel's
test data. Each DICOM file goes once through the LIDC header pass (:func:`read_headers`: a CT
series, or a reject reason) and once through the pixel reader (:func:`read_slice_hu`: HU, or a
:class:`SeriesError` naming the file); each NIfTI/Analyze file through MosMed's reader. The
expected outcome of every file is written below, so a reader change that silently reads a
file differently, or crashes on one, fails here.

HU references: ``=other.dcm`` is the uncompressed twin in the corpus (lossless syntaxes, and
the ``*_J2KI`` lossy files, whose ``*_UNCI`` twins are their decoded reference); ``ref`` is
pydicom's own decode (pylibjpeg for compressed data) through ``apply_modality_lut``, padding
to air.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data.data_manager import DATA_ROOT, external_data_sources
from pydicom.pixels import apply_modality_lut, get_decoder

from oncopipe.datasets.lidc.series import AIR_HU, SeriesError, read_headers, read_slice_hu
from oncopipe.datasets.mosmed.volume import VolumeError, canonical, read_nifti

NIBABEL = Path(nib.__file__).parent

# header pass: series | notCT | unreadable | nonaxial | noIPP
# pixels: ref | =twin | !reason code (PIXEL_REJECTS)
DICOM = """
693_J2KI.dcm                                             series     =693_UNCI.dcm
693_J2KR.dcm                                             series     =693_UNCR.dcm
693_UNCI.dcm                                             series     ref
693_UNCR.dcm                                             series     ref
CT_small.dcm                                             series     ref
ExplVR_BigEnd.dcm                                        notCT      !frames
ExplVR_BigEndNoMeta.dcm                                  unreadable !unreadable
ExplVR_LitEndNoMeta.dcm                                  unreadable !unreadable
GDCMJ2K_TextGBR.dcm                                      notCT      !frames
J2K_pixelrep_mismatch.dcm                                nonaxial   ref
JPEG-LL.dcm                                              notCT      ref
JPEG-lossy.dcm                                           notCT      !jpegext
JPEG2000-embedded-sequence-delimiter.dcm                 notCT      !j2k
JPEG2000.dcm                                             notCT      =JPEG2000_UNC.dcm
JPEG2000_UNC.dcm                                         notCT      ref
JPEGLSNearLossless_08.dcm                                notCT      ref
JPEGLSNearLossless_16.dcm                                notCT      ref
JPGExtended.dcm                                          notCT      ref
JPGLosslessP14SV1_1s_1f_8b.dcm                           notCT      ref
MR-SIEMENS-DICOM-WithOverlays.dcm                        notCT      ref
MR2_J2KI.dcm                                             notCT      =MR2_UNCI.dcm
MR2_J2KR.dcm                                             notCT      =MR2_UNCR.dcm
MR2_UNCI.dcm                                             notCT      ref
MR2_UNCR.dcm                                             notCT      ref
MR_small.dcm                                             notCT      ref
MR_small_RLE.dcm                                         notCT      =MR_small.dcm
MR_small_bigendian.dcm                                   notCT      =MR_small.dcm
MR_small_expb.dcm                                        notCT      =MR_small.dcm
MR_small_implicit.dcm                                    notCT      =MR_small.dcm
MR_small_jp2klossless.dcm                                notCT      =MR_small.dcm
MR_small_jpeg_ls_lossless.dcm                            notCT      =MR_small.dcm
MR_small_padded.dcm                                      notCT      =MR_small.dcm
MR_truncated.dcm                                         notCT      !truncated
OBXXXX1A.dcm                                             notCT      !palette
OBXXXX1A_2frame.dcm                                      notCT      !frames
OBXXXX1A_expb.dcm                                        notCT      !palette
OBXXXX1A_expb_2frame.dcm                                 notCT      !frames
OBXXXX1A_rle.dcm                                         notCT      !palette
OBXXXX1A_rle_2frame.dcm                                  notCT      !frames
OT-PAL-8-face.dcm                                        unreadable !unreadable
RG1_J2KI.dcm                                             notCT      =RG1_UNCI.dcm
RG1_J2KR.dcm                                             notCT      =RG1_UNCR.dcm
RG1_UNCI.dcm                                             notCT      ref
RG1_UNCR.dcm                                             notCT      ref
RG3_J2KI.dcm                                             notCT      =RG3_UNCI.dcm
RG3_J2KR.dcm                                             notCT      =RG3_UNCR.dcm
RG3_UNCI.dcm                                             notCT      ref
RG3_UNCR.dcm                                             notCT      ref
SC_jpeg_no_color_transform.dcm                           notCT      !frames
SC_jpeg_no_color_transform_2.dcm                         notCT      !frames
SC_rgb.dcm                                               notCT      !frames
SC_rgb_16bit.dcm                                         notCT      !frames
SC_rgb_16bit_2frame.dcm                                  notCT      !frames
SC_rgb_2frame.dcm                                        notCT      !frames
SC_rgb_32bit.dcm                                         notCT      !frames
SC_rgb_32bit_2frame.dcm                                  notCT      !frames
SC_rgb_dcmtk_+eb+cr.dcm                                  notCT      !frames
SC_rgb_dcmtk_+eb+cy+n1.dcm                               notCT      !frames
SC_rgb_dcmtk_+eb+cy+n2.dcm                               notCT      !frames
SC_rgb_dcmtk_+eb+cy+np.dcm                               notCT      !frames
SC_rgb_dcmtk_+eb+cy+s2.dcm                               notCT      !frames
SC_rgb_dcmtk_+eb+cy+s4.dcm                               notCT      !frames
SC_rgb_dcmtk_ebcr_dcmd.dcm                               notCT      !frames
SC_rgb_dcmtk_ebcyn1_dcmd.dcm                             notCT      !frames
SC_rgb_dcmtk_ebcyn2_dcmd.dcm                             notCT      !frames
SC_rgb_dcmtk_ebcynp_dcmd.dcm                             notCT      !frames
SC_rgb_dcmtk_ebcys2_dcmd.dcm                             notCT      !frames
SC_rgb_dcmtk_ebcys4_dcmd.dcm                             notCT      !frames
SC_rgb_expb.dcm                                          notCT      !frames
SC_rgb_expb_16bit.dcm                                    notCT      !frames
SC_rgb_expb_16bit_2frame.dcm                             notCT      !frames
SC_rgb_expb_2frame.dcm                                   notCT      !frames
SC_rgb_expb_32bit.dcm                                    notCT      !frames
SC_rgb_expb_32bit_2frame.dcm                             notCT      !frames
SC_rgb_gdcm2k_uncompressed.dcm                           notCT      !frames
SC_rgb_gdcm_KY.dcm                                       notCT      !frames
SC_rgb_jls_lossy_line.dcm                                notCT      !frames
SC_rgb_jls_lossy_sample.dcm                              notCT      !frames
SC_rgb_jpeg.dcm                                          notCT      !frames
SC_rgb_jpeg_app14_dcmd.dcm                               notCT      !frames
SC_rgb_jpeg_dcmd.dcm                                     notCT      !frames
SC_rgb_jpeg_dcmtk.dcm                                    notCT      !frames
SC_rgb_jpeg_gdcm.dcm                                     notCT      !frames
SC_rgb_jpeg_lossy_gdcm.dcm                               notCT      !frames
SC_rgb_rle.dcm                                           notCT      !frames
SC_rgb_rle_16bit.dcm                                     notCT      !frames
SC_rgb_rle_16bit_2frame.dcm                              notCT      !frames
SC_rgb_rle_2frame.dcm                                    notCT      !frames
SC_rgb_rle_32bit.dcm                                     notCT      !frames
SC_rgb_rle_32bit_2frame.dcm                              notCT      !frames
SC_rgb_small_odd.dcm                                     notCT      !frames
SC_rgb_small_odd_big_endian.dcm                          notCT      !frames
SC_rgb_small_odd_jpeg.dcm                                notCT      !frames
SC_ybr_full_422_uncompressed.dcm                         notCT      !frames
SC_ybr_full_uncompressed.dcm                             notCT      !frames
UN_sequence.dcm                                          notCT      !nopixels
US1_J2KI.dcm                                             notCT      !frames
US1_J2KR.dcm                                             notCT      !frames
US1_UNCI.dcm                                             notCT      !frames
US1_UNCR.dcm                                             notCT      !frames
badVR.dcm                                                notCT      !badframes
bad_sequence.dcm                                         series     ref
color-pl.dcm                                             notCT      !frames
color-px.dcm                                             notCT      !frames
color3d_jpeg_baseline.dcm                                notCT      !frames
eCT_Supplemental.dcm                                     noIPP      !frames
empty_charset_LEI.dcm                                    notCT      !nopixels
emri_small.dcm                                           notCT      !frames
emri_small_RLE.dcm                                       notCT      !frames
emri_small_big_endian.dcm                                notCT      !frames
emri_small_jpeg_2k_lossless.dcm                          notCT      !frames
emri_small_jpeg_2k_lossless_too_short.dcm                notCT      !nopixels
emri_small_jpeg_ls_lossless.dcm                          notCT      !frames
examples_jpeg2k.dcm                                      notCT      !frames
examples_overlay.dcm                                     notCT      ref
examples_palette.dcm                                     notCT      !palette
examples_rgb_color.dcm                                   notCT      !frames
examples_ybr_color.dcm                                   notCT      !frames
explicit_VR-UN.dcm                                       nonaxial   ref
gdcm-US-ALOKA-16.dcm                                     notCT      !palette
gdcm-US-ALOKA-16_big.dcm                                 notCT      !palette
image_dfl.dcm                                            notCT      ref
liver.dcm                                                notCT      !frames
liver_1frame.dcm                                         notCT      ref
liver_expb.dcm                                           notCT      !frames
liver_expb_1frame.dcm                                    notCT      =liver_1frame.dcm
meta_missing_tsyntax.dcm                                 notCT      !tsyntax
mlut_18.dcm                                              notCT      ref
nested_priv_SQ.dcm                                       notCT      !nobits
no_meta.dcm                                              unreadable !unreadable
no_meta_group_length.dcm                                 notCT      !nopixels
priv_SQ.dcm                                              notCT      !nopixels
reportsi.dcm                                             notCT      !nopixels
reportsi_with_empty_number_tags.dcm                      notCT      !nopixels
rtdose.dcm                                               notCT      !frames
rtdose_1frame.dcm                                        notCT      ref
rtdose_expb.dcm                                          notCT      !frames
rtdose_expb_1frame.dcm                                   notCT      =rtdose_1frame.dcm
rtdose_rle.dcm                                           notCT      !frames
rtdose_rle_1frame.dcm                                    notCT      =rtdose_1frame.dcm
rtplan.dcm                                               notCT      !nopixels
rtplan_truncated.dcm                                     notCT      !nopixels
rtstruct.dcm                                             unreadable !unreadable
test-SR.dcm                                              notCT      !nopixels
vlut_04.dcm                                              notCT      ref
waveform_ecg.dcm                                         notCT      !nopixels
nibabel:nicom/tests/data/0.dcm                           notCT      ref
nibabel:nicom/tests/data/1.dcm                           notCT      ref
nibabel:nicom/tests/data/csa_slice_norm.dcm              notCT      !nopixels
nibabel:nicom/tests/data/decimal_rescale.dcm             notCT      ref
nibabel:nicom/tests/data/slicethickness_empty_string.dcm notCT      ref
nibabel:tests/data/0.dcm                                 notCT      ref
nibabel:tests/data/1.dcm                                 notCT      ref
"""

HEADER_REJECTS = {
    "notCT": "not CT: Modality",
    "unreadable": "unreadable DICOM: File is missing DICOM File Meta Information",
    "nonaxial": "series rejected: ",  # + path + ": non-axial ImageOrientationPatient"
    "noIPP": "bad header: ImagePositionPatient missing",
}
PIXEL_REJECTS = {
    "!frames": "not a single-frame greyscale slice",
    "!palette": "PhotometricInterpretation PALETTE COLOR is not greyscale",
    "!nopixels": "no PixelData",
    "!unreadable": "unreadable DICOM: File is missing DICOM File Meta Information",
    "!tsyntax": "no TransferSyntaxUID in the file meta header",
    "!badframes": "NumberOfFrames '1A' is not an integer",
    "!jpegext": "cannot decode pixel data (JPEG Extended (Process 2 and 4) "
                "(1.2.840.10008.1.2.4.51))",
    "!j2k": "cannot decode pixel data (JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91))",
    "!truncated": "cannot decode pixel data (Explicit VR Little Endian (1.2.840.10008.1.2.1))",
    "!nobits": "cannot decode pixel data (Implicit VR Little Endian (1.2.840.10008.1.2))",
}
EXPECTED = {name: (header, pixels) for name, header, pixels in
            (line.split() for line in DICOM.strip().splitlines())}


def _corpus() -> dict[str, Path]:
    """Listed from the folders (pydicom's get_testdata_files would try to download more)."""
    folders = [Path(DATA_ROOT) / "test_files", Path(external_data_sources()["pydicom-data"]
                                                    .data_path)]
    files = {p.name: p for folder in folders for p in sorted(folder.glob("*.dcm"))}
    for path in sorted(NIBABEL.rglob("*.dcm")):
        if "data" in path.parts:
            files["nibabel:" + path.relative_to(NIBABEL).as_posix()] = path
    return files


CORPUS = _corpus()


def test_corpus_is_complete():
    """pydicom's test files, pydicom-data (dev extra) and nibabel's: every file has a row."""
    assert set(CORPUS) == set(EXPECTED)
    assert len(CORPUS) == 153


@functools.cache
def _hu(name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_slice_hu(CORPUS[name])


def _reference(path: Path) -> np.ndarray:
    """pydicom's decode (pylibjpeg for compressed data) + its Modality LUT, padding to air."""
    ds = pydicom.dcmread(path)
    tsyntax = ds.file_meta.TransferSyntaxUID
    raw = (get_decoder(tsyntax).as_array(ds, decoding_plugin="pylibjpeg")[0]
           if tsyntax.is_compressed else ds.pixel_array)
    hu = apply_modality_lut(raw, ds).astype(np.float32)
    if "PixelPaddingValue" in ds:
        hu[raw == ds.PixelPaddingValue] = AIR_HU  # SS in this corpus: no sign quirk
    return hu


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dicom_file(name):
    path = CORPUS[name]
    header, pixels = EXPECTED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series, rejects = read_headers([path])
    if header == "series":
        assert len(series) == 1 and not rejects
        assert [s.path for s in series[0].slices] == [path]
    else:
        assert not series and len(rejects) == 1 and rejects[0][0] == path
        assert rejects[0][1].startswith(HEADER_REJECTS[header]), rejects[0][1]
        if header == "nonaxial":
            assert "non-axial ImageOrientationPatient" in rejects[0][1]
    if pixels.startswith("!"):
        with pytest.raises(SeriesError) as err:
            _hu(name)
        assert str(err.value).startswith(f"{path}: {PIXEL_REJECTS[pixels]}"), str(err.value)
        return
    hu = _hu(name)
    assert hu.dtype == np.float32 and hu.ndim == 2
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert hu.shape == (ds.Rows, ds.Columns)
    expected = _hu(pixels[1:]) if pixels.startswith("=") else _reference(path)
    np.testing.assert_array_equal(hu, expected)


def test_modality_lut_sequence_applied():
    """mlut_18.dcm maps stored values through its LUT: read raw, it is off by up to 63,488."""
    path = CORPUS["mlut_18.dcm"]
    raw = pydicom.dcmread(path).pixel_array
    hu = _hu("mlut_18.dcm")
    assert np.abs(hu - raw).max() == 63488
    assert hu.max() == 65535 and hu.min() == 0


def test_compressed_syntaxes_all_read():
    """Every compressed syntax is among the files read above (JPEG Baseline is colour only in
    this corpus: tests/test_lidc_broken.py reads a greyscale one)."""
    read = {pydicom.dcmread(CORPUS[n], stop_before_pixels=True).file_meta.TransferSyntaxUID
            for n, (_, px) in EXPECTED.items() if not px.startswith("!")}
    assert {uid.name for uid in read if uid.is_compressed} >= {
        "JPEG Extended (Process 2 and 4)",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG-LS Lossless Image Compression", "JPEG-LS Lossy (Near-Lossless) Image Compression",
        "JPEG 2000 Image Compression (Lossless Only)", "JPEG 2000 Image Compression",
        "RLE Lossless"}


# MosMed's NIfTI reader: read (voxels and affine equal to nibabel's) or rejected with why.
NIFTI = {
    "analyze.hdr": "not a single-file NIfTI",
    "anatomical.nii": "read",
    "example4d.nii.gz": "expected a 3D volume, got shape (128, 96, 24, 2)",
    "example_nifti2.nii.gz": "expected a 3D volume, got shape (32, 20, 12, 2)",
    "functional.nii": "expected a 3D volume, got shape (17, 21, 3, 20)",
    "nifti1.hdr": "not a single-file NIfTI",
    "nifti2.hdr": "not a single-file NIfTI",
    "reoriented_anat_moved.nii": "read",
    "resampled_anat_moved.nii": "read",
    "row_major.dconn.nii": "expected a 3D volume, got shape (1, 1, 1, 1, 10, 10)",
    "standard.nii.gz": "read",
    "test.mgz": "not a NIfTI file (sizeof_hdr 1)",
}


def test_nifti_corpus_is_complete():
    names = {p.name for p in (NIBABEL / "tests" / "data").iterdir()
             if p.name.endswith((".nii", ".nii.gz", ".hdr", ".img", ".mgz", ".mgh"))}
    assert names == set(NIFTI)


@pytest.mark.parametrize("name", sorted(NIFTI))
def test_nifti_file(name):
    path = NIBABEL / "tests" / "data" / name
    if NIFTI[name] != "read":
        with pytest.raises(VolumeError) as err:
            canonical(path, *read_nifti(path))
        assert str(err.value).startswith(f"{path}: {NIFTI[name]}"), str(err.value)
        return
    voxels, affine = read_nifti(path)
    vol = canonical(path, voxels, affine)
    img = nib.load(path)
    np.testing.assert_array_equal(voxels, np.asanyarray(img.dataobj))
    np.testing.assert_allclose(affine, img.affine)
    # canonical (S, P, L) from nibabel's own RAS canonical image: axes reversed, A and R flipped
    ras = np.asanyarray(nib.as_closest_canonical(img).dataobj)
    np.testing.assert_array_equal(vol.hu, np.flip(ras.transpose(2, 1, 0), (1, 2)))
