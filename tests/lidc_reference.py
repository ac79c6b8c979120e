"""References for the LIDC read path: the crop path before raw reads, and full-size series.

:func:`crop_series` is the path the raw reads replaced (every header parsed again from the
folder, every slice decoded by pydicom into float32 HU, the whole volume copied into
SimpleITK, then cropped with SimpleITK's ``Resample`` and ``DiscreteGaussian``;
:func:`read_volume` is its whole-volume read); the new path's 2D crops match it bit for bit,
its 3D crops within one float16 step of the windowed values.
:func:`write_series` writes a CT series at real size (512 x 512, LIDC's tags) in the pixel
encodings the fast path has to get right. Used by tests/test_lidc_pixels.py and
benchmarks/lidc_read.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from oncopipe.datasets.lidc import crops
from oncopipe.datasets.lidc.params import CropParams
from oncopipe.datasets.lidc.prepare import central, load_series
from oncopipe.datasets.lidc.series import AIR_HU, SeriesError, SeriesHeader, read_slice_hu


def read_volume(header: SeriesHeader) -> np.ndarray:
    """The kept slices as a (z, y, x) float32 HU volume, z increasing, each decoded by pydicom
    (``read_slice_hu``): the whole-volume read the raw reads replaced."""
    vol = np.empty((len(header.slices), *header.shape_yx), np.float32)
    for k, sl in enumerate(header.slices):
        img = read_slice_hu(sl.path)
        if img.shape != header.shape_yx:
            raise SeriesError(f"{sl.path}: pixel data {img.shape} != Rows/Columns "
                              f"{header.shape_yx}")
        vol[k] = img
    return vol


def volume_image(volume: np.ndarray, header: SeriesHeader) -> sitk.Image:
    zs = header.zs
    step = header.z_step if len(zs) > 1 else 1.0
    if len(zs) > 1 and np.abs(np.diff(zs) - step).max() > 1e-3 * step:
        grid = zs[0] + step * np.arange(round((zs[-1] - zs[0]) / step) + 1)
        upper = np.clip(np.searchsorted(zs, grid), 1, len(zs) - 1)
        frac = ((grid - zs[upper - 1]) / (zs[upper] - zs[upper - 1])).astype(np.float32)
        volume = (volume[upper - 1] * (1 - frac)[:, None, None]
                  + volume[upper] * frac[:, None, None])
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, np.float32))
    image.SetSpacing((*header.spacing_xy, step))
    image.SetOrigin((*header.origin_xy, float(zs[0])))
    return image


def resample(image: sitk.Image, centre: tuple[float, ...], spacing: float,
             size: int) -> np.ndarray:
    """SimpleITK ``Resample`` (linear, air outside) onto ``size`` samples per axis centred on
    ``centre``: what the crops were made with before numpy did the same arithmetic."""
    dim = image.GetDimension()
    origin = [c - (size - 1) / 2 * spacing for c in centre]
    out = sitk.Resample(image, [size] * dim, sitk.Transform(), sitk.sitkLinear, origin,
                        [spacing] * dim, np.eye(dim).ravel().tolist(), AIR_HU,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def crop_2d(slice_hu: np.ndarray, header: SeriesHeader, x_mm: float, y_mm: float,
            p: CropParams) -> np.ndarray:
    """The 2D crop with SimpleITK over the whole slice."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(slice_hu, np.float32))
    image.SetSpacing(header.spacing_xy)
    image.SetOrigin(header.origin_xy)
    return resample(image, (x_mm, y_mm), p.mm_per_px, p.size_2d)


def crop_3d(image: sitk.Image, centre_mm: tuple[float, float, float],
            p: CropParams) -> np.ndarray:
    spacing = p.fov_3d_mm / p.size_3d
    region = _around(image, centre_mm, p.fov_3d_mm / 2 + 2 * spacing)
    if region is None:
        return np.full((p.size_3d,) * 3, AIR_HU, np.float32)
    variances = [max(0.0, (spacing / 2) ** 2 - (s / 2) ** 2) for s in region.GetSpacing()]
    if max(variances) > 0.01:
        region = sitk.DiscreteGaussian(region, variances, 32, 0.01, True)
    return resample(region, centre_mm, spacing, p.size_3d)


def _around(image: sitk.Image, centre_mm: tuple[float, ...], half_mm: float) -> sitk.Image | None:
    size = np.array(image.GetSize())
    lo = np.array(image.TransformPhysicalPointToContinuousIndex(
        [c - half_mm for c in centre_mm]))
    hi = np.array(image.TransformPhysicalPointToContinuousIndex(
        [c + half_mm for c in centre_mm]))
    start = np.clip(np.floor(lo).astype(int) - 1, 0, size)
    stop = np.clip(np.ceil(hi).astype(int) + 2, 0, size)
    if np.any(stop - start < 1):
        return None
    return sitk.RegionOfInterest(image, (stop - start).tolist(), start.tolist())


def crop_series(folder: Path, series_uid: str, lesions: list[dict], p: CropParams
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The old ``_crop_series``: (2D crops, 3D crops), windowed float16, in prepare's order."""
    header = load_series(folder, series_uid)
    volume = read_volume(header)
    image = volume_image(volume, header)
    out_2d, out_3d = [], []
    for lesion in lesions:
        for k in central(lesion["slices"], p.max_slices):
            hu = crop_2d(volume[k], header, lesion["x_mm"], lesion["y_mm"], p)
            out_2d.append(crops.window(hu, p.hu_window)[None])
        hu = crop_3d(image, (lesion["x_mm"], lesion["y_mm"], lesion["z_mm"]), p)
        out_3d.append(crops.window(hu, p.hu_window)[None])
    return out_2d, out_3d


def write_series(folder: Path, zs: list[float] | np.ndarray, rows: int = 512, seed: int = 0,
                 signed: bool = True, bits_stored: int = 16, slope: float = 1.0,
                 intercept: float = -1024.0, pad: int | None = 63536,
                 pad_limit: int | None = None, syntax: str = ExplicitVRLittleEndian,
                 garbage_bits: bool = False, scanner_header: bool = False) -> list[Path]:
    """A chest-like CT series, one file per z in ``zs`` (file names not in z order).

    ``pad`` is written as US, as LIDC does (63536 = -2000 in signed data); ``garbage_bits``
    sets the unused high bits of every word (BitsStored < 16), which readers must ignore;
    ``scanner_header`` adds what a scanner writes beside the tags we read
    (:func:`add_scanner_tags`).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[:rows, :rows] / rows - 0.5
    body = (xx / 0.45) ** 2 + (yy / 0.35) ** 2 < 1
    lungs = ((np.abs(xx) - 0.2) / 0.15) ** 2 + (yy / 0.25) ** 2 < 1
    hu = np.where(body, np.where(lungs, -850.0, 40.0), -1000.0)
    paths = []
    for n, z in enumerate(zs):
        blob = 300 * np.exp(-((xx - 0.2) ** 2 + yy ** 2) / 0.002) * np.cos(z / 7)
        stored = np.round((hu + blob + rng.normal(0, 20, hu.shape) - intercept) / slope)
        if signed:
            stored = np.clip(stored, -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1)
        else:
            stored = np.clip(stored, 0, 2 ** bits_stored - 1)
        dtype = np.int16 if signed else np.uint16
        words = stored.astype(dtype)
        if pad is not None:  # outside the body: padding
            words[~body] = np.array(pad, np.uint16).astype(dtype)
        if garbage_bits and bits_stored < 16:
            noise = rng.integers(0, 2 ** (16 - bits_stored), words.shape, dtype=np.uint16)
            words = (words.view(np.uint16) | (noise << bits_stored)).view(dtype)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "LIDC-IDRI-9999"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.InstanceNumber = n + 1
        ds.ImagePositionPatient = [-180.0, -175.5, float(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.703125, 0.703125]
        ds.SliceThickness = 2.5
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        if pad is not None:
            ds.add(DataElement(0x00280120, "US", pad))
        if pad_limit is not None:
            ds.add(DataElement(0x00280121, "US", pad_limit))
        if scanner_header:
            add_scanner_tags(ds, n)
        ds.PixelData = words.tobytes()
        if syntax == RLELossless:
            ds.compress(RLELossless, words)
        elif syntax != ExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        path = folder / f"{(n * 7919) % 100003:06d}.dcm"  # not in z order
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def add_scanner_tags(ds: pydicom.Dataset, n: int) -> None:
    """The elements a CT scanner writes beside the ones we read, as in a GE LightSpeed slice
    that TCIA's de-identification kept: ~90 public elements (dates, acquisition and
    reconstruction parameters, two undefined-length sequences of references) and ~110 private
    ones in seven GE groups, about 5 KB of header. Header parsing costs per element, so a
    benchmark of it must carry them; the values are plausible, not real."""
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, generate_uid()
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ref.ReferencedSOPClassUID, \
        generate_uid()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTCHEST", "GEIIS", "CHEST"
    text = {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SpecificCharacterSet": "ISO_IR 100",
            "StudyDate": "20000101", "SeriesDate": "20000101", "AcquisitionDate": "20000101",
            "ContentDate": "20000101", "StudyTime": "120000.000", "SeriesTime": "120512.000",
            "AcquisitionTime": f"12{n // 60 % 60:02d}{n % 60:02d}.250",
            "ContentTime": f"12{n // 60 % 60:02d}{n % 60:02d}.250",
            "AccessionNumber": "", "Manufacturer": "GE MEDICAL SYSTEMS",
            "InstitutionName": "", "ReferringPhysicianName": "", "StationName": "CT01",
            "StudyDescription": "CT CHEST", "SeriesDescription": "1.25MM LUNG",
            "ManufacturerModelName": "LightSpeed16", "PatientName": "", "PatientBirthDate": "",
            "PatientSex": "", "PatientAge": "", "PatientIdentityRemoved": "YES",
            "DeidentificationMethod": "DCM:113100/113105/113107/113108/113109/113111",
            "ContrastBolusAgent": "", "ScanOptions": "HELICAL MODE", "KVP": "120",
            "DataCollectionDiameter": "500.000000", "SoftwareVersions": "LightSpeedverrel",
            "ProtocolName": "5.1 CHEST", "ReconstructionDiameter": "360.000000",
            "DistanceSourceToDetector": "949.075012", "DistanceSourceToPatient": "541.000000",
            "GantryDetectorTilt": "0.000000", "TableHeight": "139.500000",
            "RotationDirection": "CW", "ExposureTime": "570", "XRayTubeCurrent": "400",
            "Exposure": "6", "FilterType": "BODY FILTER", "GeneratorPower": "48000",
            "FocalSpots": "1.200000", "ConvolutionKernel": "LUNG", "PatientPosition": "FFS",
            "RevolutionTime": "0.500000", "SingleCollimationWidth": "1.250000",
            "TotalCollimationWidth": "20.000000", "TableSpeed": "27.500000",
            "TableFeedPerRotation": "13.750000", "SpiralPitchFactor": "1.375000",
            "StudyID": "", "SeriesNumber": "3000566", "AcquisitionNumber": "1",
            "FrameOfReferenceUID": ds.StudyInstanceUID, "PositionReferenceIndicator": "SN",
            "SliceLocation": str(ds.ImagePositionPatient[2]), "ImagesInAcquisition": "133",
            "HighBit": ds.HighBit, "WindowCenter": "-600", "WindowWidth": "1600",
            "RescaleType": "HU", "LossyImageCompression": "00",
            "PerformedProcedureStepStartDate": "20000101"}
    for keyword, value in text.items():
        if value is not None and keyword not in ds:
            vr = dictionary_VR(keyword)
            setattr(ds, keyword, float(value) if vr in ("FD", "FL") else value)
    ds.ReferencedImageSequence = [ref]
    ds.SourceImageSequence = [source]
    ds.ProcedureCodeSequence = [code]
    for keyword in ("ReferencedImageSequence", "SourceImageSequence"):  # as GE writes them
        ds[keyword].is_undefined_length = True
    ref.is_undefined_length_sequence_item = True
    private = {0x0009: ("GEMS_IDEN_01", 8), 0x0019: ("GEMS_ACQU_01", 40),
               0x0021: ("GEMS_RELA_01", 12), 0x0023: ("GEMS_STDY_01", 4),
               0x0027: ("GEMS_IMAG_01", 16), 0x0043: ("GEMS_PARM_01", 24),
               0x0045: ("GEMS_HELIOS_01", 6)}
    for group, (creator, count) in private.items():
        block = ds.private_block(group, creator, create=True)
        for i in range(count):
            try:  # the VR pydicom's private dictionary gives, so an implicit-VR read agrees
                vr = private_dictionary_VR(block.get_tag(0x10 + i), creator)
            except KeyError:
                vr = ("SL", "DS", "SS", "LO", "OB")[i % 5]
            block.add_new(0x10 + i, vr, _plausible(vr, i))


def _plausible(vr: str, i: int) -> object:
    """A value of VR ``vr`` (pydicom's spelling, possibly ``"US or SS"``)."""
    vr = vr.split(" or ")[0]
    if vr in ("SL", "SS", "US", "UL", "SV", "UV"):
        return i
    if vr in ("FL", "FD"):
        return i * 0.5
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return bytes(8)
    if vr in ("DS", "IS"):
        return str(i)
    if vr in ("DA", "TM", "DT"):
        return "20000101" if vr != "TM" else "120000"
    if vr == "UI":
        return "1.2.3." + str(i)
    if vr == "AT":
        return 0x00100010
    if vr == "SQ":
        return []
    return f"GE{i:02d}"
