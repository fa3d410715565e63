"""Seeded synthetic chest CT volumes with nodules planted in the lungs, for detection
(book case study 6.1a).

A volume is a thorax in Hounsfield units: air around an elliptical body (soft tissue
with a fat layer under the skin), two lungs (parenchyma about -850 HU with a slow
density drift), and in the lungs bent vessels (tubes of -100..+50 HU, the confounders: a
vessel cut across looks like a small nodule in one slice, but runs on through the next).
Nodules are ellipsoids placed inside the lungs, apart from each other: solid ones (about
0..60 HU), and a share of subtle ground-glass ones (-650..-400 HU). Tiny findings below
the size a reader reports (LUNA16: 3 mm) are planted too, and marked ``excluded``: a
detector that finds them is neither rewarded nor punished.

Everything is modelled in millimetres and sampled on the anisotropic voxel grid, each
slice the mean of thin sub-slices (slice-thickness partial volume), with in-plane
correlated noise. Every subject is one :class:`Record` (``chest_p0003``) with its label
map (:data:`LABEL_NAMES`: 1 nodule, 2 excluded finding), the lungs as region of
interest, and one :class:`casebook.boxes.Box` per finding: centre and axis-aligned
extent in world mm. Geometry as the other generators: ``size`` and ``spacing`` x, y, z,
identity direction, volume centre at the origin.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.boxes import Box
from casebook.layout import Record
from casebook.synthetic.patients import IDENTITY_DIRECTION, array_checksum, checked_fraction, checked_geometry, volume_images
from casebook.synthetic.primitives import Range, correlated_noise, random_rotation, random_unit_vectors, sigmoid, uniform

LABEL_NAMES = {0: "background", 1: "nodule", 2: "excluded finding"}
CLASS_NAMES = [LABEL_NAMES[v] for v in sorted(LABEL_NAMES)]
CHANNEL_NAMES = ["CT"]
HU_MIN, HU_MAX = -1024, 3071
#: sub-slices rendered per slice (slice-thickness partial volume), soft edge width (mm)
_SUBSLICES, _EDGE_MM = 3, 0.4
#: gap kept between planted findings (mm), and tries to place one before giving up
_GAP_MM, _TRIES = 3.0, 200
#: largest ratio of an ellipsoid's semi-axis to its mean radius (elongation up to 1.25)
_MAX_ELONGATION = 1.25


def _grid(size_zyx: tuple[int, int, int], spacing_xyz: tuple[float, ...]) -> np.ndarray:
    """Voxel-centre positions (3, Z*SUB, Y, X) in mm, x, y, z, origin at the volume centre."""
    nz, ny, nx = size_zyx
    sx, sy, sz = spacing_xyz
    z = ((np.arange(nz * _SUBSLICES) + 0.5) / _SUBSLICES - nz / 2.0) * sz
    y = (np.arange(ny) + 0.5 - ny / 2.0) * sy
    x = (np.arange(nx) + 0.5 - nx / 2.0) * sx
    return np.stack(np.meshgrid(z, y, x, indexing="ij")[::-1])


def _anatomy(points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancies (body, fat layer, lungs) of an elliptical thorax; sizes relative to the field of view."""
    x, y, z = points
    half_x, half_y = float(np.abs(x).max()), float(np.abs(y).max())
    body_a, body_b = half_x * rng.uniform(0.88, 0.95), half_y * rng.uniform(0.72, 0.8)
    r_body = np.sqrt((x / body_a) ** 2 + (y / body_b) ** 2)
    body = sigmoid((1.0 - r_body) * min(body_a, body_b) / _EDGE_MM)
    fat = sigmoid((r_body - 0.9) * min(body_a, body_b) / _EDGE_MM) * body
    lung = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx = side * body_a * rng.uniform(0.42, 0.48)
        a, b = body_a * rng.uniform(0.3, 0.36), body_b * rng.uniform(0.62, 0.72)
        taper = 1.0 + 0.15 * z / (np.abs(z).max() + 1e-6)  # wider at the base
        r = np.sqrt(((x - cx) / (a * taper)) ** 2 + (y / (b * taper)) ** 2)
        lung = np.maximum(lung, sigmoid((1.0 - r) * a / _EDGE_MM))
    return body, fat, lung


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    rel = points - a[:, None, None, None]
    t = np.clip(np.tensordot(ab, rel, axes=1) / (ab @ ab + 1e-12), 0.0, 1.0)
    return np.sqrt(((rel - ab[:, None, None, None] * t) ** 2).sum(axis=0))


def _vessels(points: np.ndarray, lung_points: np.ndarray, rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, float]]:
    """Occupancy and HU of ``count`` bent tubes, each through a random point of the lungs."""
    extent = np.ptp(points.reshape(3, -1), axis=1)
    out = []
    for _ in range(count):
        through = lung_points[rng.integers(len(lung_points))]
        direction = random_unit_vectors(1, rng)[0]
        half = 0.35 * float(np.linalg.norm(extent))
        bend = random_unit_vectors(1, rng)[0] * rng.uniform(0.0, 6.0)
        a, b, c = through - half * direction, through + bend, through + half * direction
        dist = np.minimum(_segment_distance(points, a, b), _segment_distance(points, b, c))
        out.append((sigmoid((rng.uniform(0.6, 1.8) - dist) / _EDGE_MM), rng.uniform(-100.0, 50.0)))
    return out


def _place(
    centres: list[tuple[np.ndarray, float]], lung_points: np.ndarray, depth: np.ndarray, margin: float, reach: float, rng
) -> np.ndarray | None:
    """A centre inside the lungs at least ``margin`` from their edge, its ``reach`` (the
    finding's largest semi-axis) at least a gap from every placed finding's; None when none
    is found."""
    deep = np.flatnonzero(depth >= margin)
    for _ in range(_TRIES if len(deep) else 0):
        centre = lung_points[deep[rng.integers(len(deep))]]
        if all(np.linalg.norm(centre - c) >= reach + r + _GAP_MM for c, r in centres):
            return centre
    return None


def _ellipsoid(points: np.ndarray, centre: np.ndarray, radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy of a randomly turned ellipsoid of mean radius ``radius``, and its
    axis-aligned full extent along x, y, z (mm)."""
    rotation = random_rotation(rng)
    elong = rng.uniform(1.0, _MAX_ELONGATION, size=3)
    axes = radius * elong / np.cbrt(np.prod(elong))  # the sphere's volume
    local = np.tensordot(rotation.T, points - centre[:, None, None, None], axes=1)
    rho = np.sqrt(((local / axes[:, None, None, None]) ** 2).sum(axis=0))
    occupancy = sigmoid((1.0 - rho) * radius / _EDGE_MM)
    extent = 2.0 * np.sqrt(((rotation * axes[None, :]) ** 2).sum(axis=1))
    return occupancy, extent


def _render(size_zyx, spacing, rng: np.random.Generator, knobs: dict):
    """One volume: HU image, label map, lung mask and the planted findings
    (centre mm, extent mm, excluded, kind)."""
    points = _grid(size_zyx, spacing)
    body, fat, lung = _anatomy(points, rng)
    drift = ndimage.zoom(ndimage.gaussian_filter(rng.standard_normal((4, 6, 6)), 1.0), np.array(lung.shape) / (4, 6, 6), order=1)
    hu = -1000.0 + body * (rng.uniform(30.0, 55.0) + 1000.0)
    hu = hu + fat * (rng.uniform(-110.0, -80.0) - hu)
    hu = hu + lung * (rng.uniform(-880.0, -820.0) + 25.0 * drift / (drift.std() + 1e-12) - hu)
    inside = lung >= 0.5
    lung_points = points[:, inside].T
    depth = ndimage.distance_transform_edt(inside, sampling=(spacing[2] / _SUBSLICES, spacing[1], spacing[0]))[inside]
    for occ, vessel_hu in _vessels(points, lung_points, rng, int(rng.integers(*knobs["vessel_count"], endpoint=True))):
        hu = hu + occ * lung * (vessel_hu - hu)

    occupancy_of = {False: np.zeros(lung.shape), True: np.zeros(lung.shape)}  # nodules, excluded findings
    placed: list[tuple[np.ndarray, float]] = []
    findings = []
    wanted = [(False, uniform(rng, knobs["diameter_mm"])) for _ in range(int(rng.integers(*knobs["nodules"], endpoint=True)))]
    wanted += [(True, uniform(rng, knobs["excluded_diameter_mm"])) for _ in range(int(rng.integers(*knobs["excluded"], endpoint=True)))]
    for excluded, diameter in wanted:
        # partly inside the lung's edge is allowed (juxtapleural); the reach covers elongation
        reach = _MAX_ELONGATION * diameter / 2.0
        centre = _place(placed, lung_points, depth, 0.6 * diameter / 2.0, reach, rng)
        if centre is None:  # the lungs are full: plant fewer
            continue
        placed.append((centre, reach))
        occupancy, extent = _ellipsoid(points, centre, diameter / 2.0, rng)
        subtle = not excluded and rng.uniform() < knobs["subtle_fraction"]
        nodule_hu = rng.uniform(-650.0, -400.0) if subtle else rng.normal(30.0, 20.0)
        hu = hu + occupancy * (nodule_hu - hu)
        occupancy_of[excluded] = np.maximum(occupancy_of[excluded], occupancy)
        findings.append((centre, extent, excluded, "ground-glass" if subtle else "solid"))

    def thick(volume: np.ndarray) -> np.ndarray:  # mean of each slice's sub-slices
        return volume.reshape(size_zyx[0], _SUBSLICES, *size_zyx[1:]).mean(axis=1)

    hu = thick(hu) + correlated_noise(size_zyx, uniform(rng, knobs["noise_hu"]), rng)
    image = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    # a finding's label where at least half a voxel is it (a finding too small for that has a box only)
    label_map = np.where(thick(occupancy_of[True]) >= 0.5, 2, 0).astype(np.uint8)
    label_map[thick(occupancy_of[False]) >= 0.5] = 1
    return image, label_map, (thick(lung) >= 0.5).astype(np.uint8), findings


def generate_chest_ct(
    *,
    n_patients: int,
    size: tuple[int, int, int] = (48, 48, 32),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5),
    seed: int = 0,
    nodules: tuple[int, int] = (1, 5),
    diameter_mm: Range = (5.0, 20.0),
    subtle_fraction: float = 0.2,
    excluded: tuple[int, int] = (0, 2),
    excluded_diameter_mm: Range = (1.5, 3.0),
    vessel_count: tuple[int, int] = (6, 12),
    noise_hu: Range = (15.0, 35.0),
) -> Iterator[Record]:
    """Yield ``n_patients`` synthetic chest CT volumes, one :class:`Record` each.

    nodules, excluded
        Inclusive ranges of the number of nodules and of excluded findings per volume
        (fewer when the lungs have no room left).
    diameter_mm, excluded_diameter_mm
        Ranges of their mean diameters (mm): LUNA16 counts nodules from 3 to 30 mm.
    subtle_fraction
        Share of nodules that are ground glass rather than solid.
    vessel_count
        Inclusive range of the number of vessels.
    noise_hu
        Range of the noise standard deviation (HU).
    """
    size, spacing = checked_geometry(size, spacing)
    knobs = {
        "nodules": tuple(int(n) for n in nodules),
        "diameter_mm": tuple(float(d) for d in diameter_mm),
        "subtle_fraction": checked_fraction("subtle_fraction", subtle_fraction),
        "excluded": tuple(int(n) for n in excluded),
        "excluded_diameter_mm": tuple(float(d) for d in excluded_diameter_mm),
        "vessel_count": tuple(int(n) for n in vessel_count),
        "noise_hu": tuple(float(n) for n in noise_hu),
    }
    if min(knobs["diameter_mm"] + knobs["excluded_diameter_mm"]) <= 0:
        raise ValueError(f"diameters must be positive, got {diameter_mm} and {excluded_diameter_mm}")
    size_zyx = (size[2], size[1], size[0])
    origin = tuple(-n * s / 2.0 + s / 2.0 for n, s in zip(size, spacing))
    for index in range(int(n_patients)):
        rng = np.random.default_rng([seed, 7, index])
        image, label, lung, findings = _render(size_zyx, spacing, rng, knobs)
        subject = f"chest_p{index:04d}"
        sitk_image, sitk_label, sitk_roi = volume_images(image[None], label, lung, spacing, origin)
        # the grid's mm are world mm: its first voxel centre is the origin
        boxes = [
            Box(subject, "nodule", tuple(float(v) for v in centre), tuple(float(v) for v in extent), excluded, kind)
            for centre, extent, excluded, kind in findings
        ]
        yield Record(
            image_id=subject,
            patient_id=subject,
            label=None,
            image=sitk_image,
            spacing=spacing,
            mask=sitk_label,
            origin=origin,
            direction=IDENTITY_DIRECTION,
            roi=sitk_roi,
            source_checksum=array_checksum(image, label),
            boxes=boxes,
        )
