"""Seeded synthetic lung-CT patches with one nodule each (benign vs malignant).

A patch is lung parenchyma (about -850 HU, with a smooth low-frequency drift), a few
vessels (tubes of -100..+50 HU), one nodule near the centre, and correlated noise.
Class 0 ("benign") nodules are smooth round/ovoid, some calcified (hundreds of HU);
class 1 ("malignant") nodules are lobulated and/or spiculated, some with a ground-glass
halo. Nodule sizes overlap between classes, so size alone separates them poorly.

Everything is modelled in millimetres and sampled on the anisotropic voxel grid: a
sphere in mm spans fewer voxels along z. Each slice is the mean of several thin
sub-slices, so thick slices show the partial-volume blur of a real scanner.

The label is per patient; a patient's patches share parenchyma density, noise level and
nodule style, each patch holds a different nodule.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.layout import Record
from casebook.synthetic.patients import assign_patient_labels, images_for_patient, synthetic_record
from casebook.synthetic.primitives import correlated_noise, random_rotation, random_unit_vectors, sigmoid, uniform

CLASS_NAMES = ["benign", "malignant"]

#: Range of values the int16 output is clipped to (air to dense bone / metal-free).
HU_MIN, HU_MAX = -1024, 3071

Range = tuple[float, float]

#: Sub-slices rendered per slice to model slice-thickness partial volume.
_SUBSLICES = 3
#: Width (mm) of the soft edge every structure is rendered with (scanner point spread).
_EDGE_MM = 0.35


def _physical_grid(shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Voxel-centre positions in mm, shape (3, Z*SUB, Y, X), ordered (x, y, z), origin at the centre.

    Each slice is split into ``_SUBSLICES`` thin sub-slices that are averaged later.
    """
    nz, ny, nx = shape
    sx, sy, sz = spacing_xyz
    z = ((np.arange(nz * _SUBSLICES) + 0.5) / _SUBSLICES - nz / 2.0) * sz
    y = (np.arange(ny) + 0.5 - ny / 2.0) * sy
    x = (np.arange(nx) + 0.5 - nx / 2.0) * sx
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.stack([xx, yy, zz])


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) from every point (3, ...) to the segment a-b."""
    ab = b - a
    rel = points - a.reshape(3, *([1] * (points.ndim - 1)))
    t = np.clip(np.tensordot(ab, rel, axes=1) / (ab @ ab + 1e-12), 0.0, 1.0)
    closest = rel - ab.reshape(3, *([1] * (points.ndim - 1))) * t
    return np.sqrt((closest**2).sum(axis=0))


def _vessels(points: np.ndarray, extent: np.ndarray, rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, float]]:
    """Occupancy and HU of ``count`` vessels: gently bent tubes crossing the patch."""
    out = []
    for _ in range(count):
        direction = random_unit_vectors(1, rng)[0]
        through = rng.uniform(-0.5, 0.5, size=3) * extent  # a point the vessel passes
        half = np.linalg.norm(extent)  # long enough to cross the whole patch
        bend = random_unit_vectors(1, rng)[0] * rng.uniform(0.0, 4.0)
        knots = [through - half * direction, through + bend, through + half * direction]
        radius = rng.uniform(0.5, 1.8)
        dist = np.minimum(_segment_distance(points, knots[0], knots[1]), _segment_distance(points, knots[1], knots[2]))
        out.append((sigmoid((radius - dist) / _EDGE_MM), rng.uniform(-100.0, 50.0)))
    return out


def _nodule_radius_field(
    local: np.ndarray, axes_mm: np.ndarray, lobulation: float, lobes: np.ndarray, phases: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius of every point and the (lobulated) surface it is compared against.

    ``local`` are positions in the nodule frame (3, ...). The surface is an ellipsoid whose
    radius is modulated along a few directions: smooth bumps give a lobulated margin.
    """
    norm = np.sqrt((local**2).sum(axis=0)) + 1e-6
    unit = local / norm
    rho = np.sqrt(((local / axes_mm.reshape(3, *([1] * (local.ndim - 1)))) ** 2).sum(axis=0))
    bumps = np.zeros_like(rho)
    for lobe, phase in zip(lobes, phases):
        bumps += np.cos(np.pi * (2.0 * np.tensordot(lobe, unit, axes=1)) + phase)
    surface = 1.0 + lobulation * bumps / np.sqrt(len(lobes))
    return rho, surface


def _spicules(local: np.ndarray, radius_mm: float, rng: np.random.Generator, count: int, length: Range) -> np.ndarray:
    """Occupancy of ``count`` radial spikes: thin tapering cones leaving the surface."""
    occ = np.zeros(local.shape[1:])
    for d in random_unit_vectors(count, rng):
        spike_len = uniform(rng, length)
        t = np.tensordot(d, local, axes=1)  # distance along the spike
        perp = np.sqrt(np.maximum((local**2).sum(axis=0) - t**2, 0.0))
        frac = np.clip((t - 0.6 * radius_mm) / (0.4 * radius_mm + spike_len), 0.0, 1.0)
        width = rng.uniform(0.8, 1.4) * (1.0 - frac) + 0.2  # tapers to a thin tip
        inside = (t > 0.0) & (t < radius_mm + spike_len)
        occ = np.maximum(occ, inside * sigmoid((width - perp) / _EDGE_MM))
    return occ


def _draw_nodule(points: np.ndarray, label: int, style: dict, rng: np.random.Generator, knobs: dict):
    """HU contribution and occupancy of one nodule; returns (occupancy, hu_map, mask_occupancy)."""
    diameter = uniform(rng, knobs["malignant_diameter_mm" if label else "benign_diameter_mm"])
    radius = diameter / 2.0
    centre = rng.uniform(-2.0, 2.0, size=3)
    rotation = random_rotation(rng)
    local = np.tensordot(rotation.T, points - centre.reshape(3, 1, 1, 1), axes=1)
    elong = rng.uniform(1.0, 1.35 if label else 1.25, size=3)
    axes_mm = radius * elong / np.cbrt(np.prod(elong))  # same volume as the sphere
    subtle = label == 1 and rng.uniform() < knobs["subtle_fraction"]

    if label == 1:
        lobulation = uniform(rng, knobs["lobulation"]) * (0.35 if subtle else 1.0)
        n_spikes = int(rng.integers(*knobs["spicule_count"], endpoint=True))
        if subtle or rng.uniform() < style["lobulated_only"]:
            n_spikes = int(rng.integers(0, 3))  # few or no spikes: irregular by lobulation alone
    else:
        lobulation = rng.uniform(0.0, knobs["benign_lobulation"])
        n_spikes = 0
    n_lobes = int(rng.integers(3, 7))
    rho, surface = _nodule_radius_field(local, axes_mm, lobulation, random_unit_vectors(n_lobes, rng), rng.uniform(0, 2 * np.pi, n_lobes))
    body = sigmoid((surface - rho) * radius / _EDGE_MM)
    if n_spikes:
        length = knobs["spicule_length_mm"]
        if subtle:
            length = (length[0] * 0.5, length[1] * 0.5)
        body = np.maximum(body, _spicules(local, radius, rng, n_spikes, length))

    solid_hu = rng.normal(style["solid_hu"], 15.0)
    hu = np.full(body.shape, solid_hu)
    occupancy = body
    if label == 0 and style["calcified"] and rng.uniform() < 0.8:
        # central, laminated or popcorn calcification: a dense core inside the nodule
        core = rng.uniform(0.3, 0.65) * radius
        offset = rng.uniform(-0.2, 0.2, size=3) * radius
        dist = np.sqrt(((local - offset.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
        calc = sigmoid((core - dist) / _EDGE_MM) * body
        hu = hu + calc * (rng.uniform(250.0, 800.0) - solid_hu)
    if label == 1 and style["ground_glass"]:
        # a hazy halo of partly filled air spaces around the solid part
        halo = sigmoid((surface * 1.5 - rho) * radius / (2 * _EDGE_MM)) * (1.0 - body)
        halo_hu = rng.uniform(-600.0, -400.0)
        occupancy = body + halo * 0.999
        hu = (body * hu + halo * halo_hu) / (occupancy + 1e-6)
    return occupancy, hu, body


def _render_patch(shape, spacing, label: int, patient: dict, rng: np.random.Generator, knobs: dict):
    points = _physical_grid(shape, spacing)
    extent = np.array([shape[2] * spacing[0], shape[1] * spacing[1], shape[0] * spacing[2]])

    fine_shape = points.shape[1:]
    # parenchyma with a slow density drift (gravity-dependent perfusion, partial volume)
    drift = ndimage.gaussian_filter(rng.standard_normal((shape[0], 6, 6)), 1.0)
    drift = ndimage.zoom(drift, (_SUBSLICES, fine_shape[1] / 6, fine_shape[2] / 6), order=1, mode="nearest")
    hu = patient["parenchyma_hu"] + 25.0 * drift / (drift.std() + 1e-12)
    n_vessels = int(rng.integers(*knobs["vessel_count"], endpoint=True))
    for occ, vessel_hu in _vessels(points, extent, rng, n_vessels):
        hu = hu + occ * (vessel_hu - hu)

    occupancy, nodule_hu, body = _draw_nodule(points, label, patient, rng, knobs)
    hu = hu + occupancy * (nodule_hu - hu)

    # average the thin sub-slices into thick slices: slice-thickness partial volume
    hu = hu.reshape(shape[0], _SUBSLICES, shape[1], shape[2]).mean(axis=1)
    body = body.reshape(shape[0], _SUBSLICES, shape[1], shape[2]).mean(axis=1)
    hu = hu + correlated_noise(hu.shape, patient["noise_hu"], rng)
    mask = body >= 0.5
    if not mask.any():  # a tiny nodule that no slice holds half of: keep its core
        mask = body >= 0.5 * body.max()
    image = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    return image, mask


def generate_nodule_ct(
    *,
    n_patients: int,
    images_per_patient: tuple[int, int] = (1, 3),
    shape: tuple[int, int, int] = (12, 40, 40),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    prevalence: float = 0.4,
    seed: int = 0,
    benign_diameter_mm: Range = (5.0, 13.0),
    malignant_diameter_mm: Range = (5.0, 13.0),
    lobulation: Range = (0.2, 0.4),
    benign_lobulation: float = 0.06,
    spicule_count: tuple[int, int] = (8, 14),
    spicule_length_mm: Range = (3.5, 7.5),
    lobulated_only_fraction: float = 0.05,
    subtle_fraction: float = 0.07,
    calcified_fraction: float = 0.3,
    ground_glass_fraction: float = 0.2,
    noise_hu: Range = (20.0, 40.0),
    vessel_count: tuple[int, int] = (1, 3),
) -> Iterator[Record]:
    """Yield synthetic lung-CT nodule patches, one :class:`Record` per patch.

    Arrays are int16 Hounsfield units of ``shape`` (z, y, x); ``spacing`` is (x, y, z) mm.
    ``round(prevalence * n_patients)`` patients have label 1 ("malignant"), shuffled by
    ``seed``; all patches of a patient share the label. ``mask`` is the nodule mask
    (spicules included, ground-glass halo and vessels excluded). Ids look like
    ``ct_p0003_n01`` (patch) and ``ct_p0003`` (patient). Same arguments give identical
    arrays.

    Difficulty knobs (the defaults give a small 3D DenseNet a test AUC of about 0.9-0.98):

    benign_diameter_mm, malignant_diameter_mm
        Nodule diameter ranges (mm), before lobulation and spicules. The same by default,
        so that size alone separates the classes poorly (spicules add a little volume).
    lobulation, benign_lobulation
        Relative amplitude of the margin's bumps: a range for malignant nodules, an upper
        bound for benign ones (which are smooth but not perfect spheres).
    spicule_count, spicule_length_mm
        Inclusive range of the number of spikes, and range of their length beyond the
        surface, for spiculated malignant nodules.
    lobulated_only_fraction
        Fraction of malignant patients whose nodules are lobulated with at most 2 spikes.
    subtle_fraction
        Per-nodule probability that a malignant nodule is subtle: weak lobulation and at
        most 2 half-length spikes -- the hard positives.
    calcified_fraction
        Fraction of benign patients whose nodules are (usually) calcified.
    ground_glass_fraction
        Fraction of malignant patients whose nodules have a ground-glass halo.
    noise_hu
        Range of the per-patient noise standard deviation (HU).
    vessel_count
        Inclusive range of the number of vessels per patch.
    """
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have 3 entries, got {shape} and {spacing}")
    knobs = {
        "benign_diameter_mm": benign_diameter_mm,
        "malignant_diameter_mm": malignant_diameter_mm,
        "lobulation": lobulation,
        "benign_lobulation": benign_lobulation,
        "spicule_count": spicule_count,
        "spicule_length_mm": spicule_length_mm,
        "subtle_fraction": subtle_fraction,
        "vessel_count": vessel_count,
    }
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    labels = assign_patient_labels(n_patients, prevalence, np.random.default_rng([seed, 0]))
    for index, label in enumerate(labels):
        rng = np.random.default_rng([seed, 2, index])
        patient = {
            "parenchyma_hu": rng.uniform(-880.0, -820.0),
            "noise_hu": uniform(rng, noise_hu),
            "solid_hu": rng.uniform(-10.0, 50.0),
            "calcified": bool(rng.uniform() < calcified_fraction),
            "ground_glass": bool(rng.uniform() < ground_glass_fraction),
            "lobulated_only": float(rng.uniform() < lobulated_only_fraction),
        }
        patient_id = f"ct_p{index:04d}"
        for j in range(images_for_patient(images_per_patient, rng)):
            image, mask = _render_patch(shape, spacing, int(label), patient, rng, knobs)
            yield synthetic_record(f"{patient_id}_n{j + 1:02d}", patient_id, int(label), image, mask, spacing)
