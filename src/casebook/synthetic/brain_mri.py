"""Seeded synthetic multi-sequence brain MRI with a glioma, for segmentation.

Each subject is one 3D volume with four co-registered sequences, in this channel order:
T1, T1c (T1 after gadolinium), T2 and FLAIR (:data:`CHANNEL_NAMES`). The anatomy is
modelled in millimetres: scalp, skull, the cerebrospinal fluid (CSF) around the brain,
a brain whose surface is an ellipsoid with a smooth random deformation, a cortical grey
matter (GM) ribbon of varying thickness around the white matter (WM), deep grey nuclei,
lateral ventricles, the interhemispheric fissure and, in one hemisphere, a tumour:

* a tumour core of irregular shape, made of a necrotic core (NCR) surrounded by an
  enhancing rim (ET) of irregular thickness;
* peritumoural edema (ED) around the core, with finger-like extensions that spread along
  the white matter. The edema surrounds the core (where the core reaches the brain edge, it is cut there).

Sequence contrasts follow the usual appearance: CSF is dark on T1 and FLAIR and bright
on T2; WM is brighter than GM on T1 and darker on T2/FLAIR; edema is bright on T2 and
FLAIR; the enhancing rim is bright on T1c only; the necrotic core is dark on T1/T1c and
bright on T2. Each sequence gets its own gain, a multiplicative smooth bias field and
Rician noise (the magnitude of a complex Gaussian signal), so the background is not zero.

Label map (:data:`LABEL_NAMES`), in the BraTS 2017-2021 convention that keeps the BraTS
2013-2016 value 4 for the enhancing tumour (value 3, the former "non-enhancing tumour",
is not used)::

    0 background, 1 necrotic / non-enhancing tumour core (NCR), 2 peritumoural edema (ED),
    4 enhancing tumour (ET)

BraTS regions: whole tumour = {1, 2, 4}, tumour core = {1, 4}, enhancing tumour = {4}.
The record's ``roi`` is the brain mask (the skull-stripped brain, ventricles included),
which holds every labelled voxel; MRI intensity normalisation (z-score) uses it.

Geometry: ``size`` and ``spacing`` are in SimpleITK order (x, y, z); arrays taken from
the images are (z, y, x) with a trailing channel axis for the vector image. The direction
is the identity, so the axes are LPS: +x towards the patient's left, +y posterior, +z
superior; the origin puts the volume centre at (0, 0, 0) mm. The head keeps its size in
mm; when ``size * spacing`` is too small to hold it, the whole anatomy is shrunk to fit.

Every subject is drawn from ``numpy.random.default_rng([seed, 7, index])``: subject
``index`` is the same whatever ``n_patients`` is.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.layout import Record
from casebook.synthetic.patients import checked_fraction, checked_geometry, subject_volumes
from casebook.synthetic.primitives import random_rotation, random_unit_vectors, sigmoid, uniform

#: Sequence (channel) names, in channel order.
CHANNEL_NAMES = ["T1", "T1c", "T2", "FLAIR"]

#: Voxel label value -> name (BraTS convention, 4 = enhancing tumour).
LABEL_NAMES = {0: "background", 1: "necrotic core", 2: "edema", 4: "enhancing tumour"}

#: Names indexed by label value, as a case study's ``class_names`` lists them (3 is unused).
CLASS_NAMES = [LABEL_NAMES.get(value, "unused") for value in range(max(LABEL_NAMES) + 1)]

#: Voxel label value -> name of the anatomical label map (``labels="anatomy"``), for
#: registration: the tissue each voxel mostly holds, a tumour (any part) over it.
ANATOMY_NAMES = {
    0: "background",
    1: "cortical grey matter",
    2: "white matter",
    3: "deep grey matter",
    4: "cerebrospinal fluid",
    5: "tumour",
}

#: The label maps a subject can carry: the tumour's (BraTS) or the anatomy's.
LABEL_MAPS = ("tumour", "anatomy")

Range = tuple[float, float]

#: Nominal semi-axes (x, y, z) of the head's outer surface, mm.
_HEAD_MM = np.array([72.0, 90.0, 66.0])

# Tissue signal per sequence (T1, T1c, T2, FLAIR), relative to white matter on T1.
_TISSUE = {
    "scalp": (1.10, 1.10, 0.85, 0.90),  # mostly fat: bright on T1
    "skull": (0.08, 0.08, 0.05, 0.05),  # cortical bone: no signal
    "csf": (0.22, 0.22, 1.45, 0.12),  # dark on T1 / FLAIR (suppressed), bright on T2
    "gm": (0.72, 0.74, 0.80, 0.82),
    "wm": (1.00, 1.00, 0.55, 0.60),
    "deep_gm": (0.80, 0.81, 0.68, 0.72),
    "edema": (0.62, 0.64, 1.12, 1.28),  # bright on T2 and FLAIR
    "enhancing": (0.70, 1.45, 0.95, 1.00),  # bright on T1c only
    "necrosis": (0.35, 0.30, 1.30, 0.85),  # dark on T1c, bright on T2
}
_TISSUE_ORDER = list(_TISSUE)


def _grid(
    size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float], subslices: int = 1
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxel-centre positions in mm, shape (3, Z * subslices, Y, X) ordered (x, y, z), and
    the origin that puts the volume centre at (0, 0, 0).

    With ``subslices`` > 1 every slice is split into that many thin sub-slices, to be
    averaged later (slice-thickness partial volume).
    """
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(size_xyz, spacing_xyz)]
    origin = tuple(float(a[0]) for a in axes)
    nz, sz = size_xyz[2], spacing_xyz[2]
    z = (((np.arange(nz * subslices) + 0.5) / subslices - 0.5 - (nz - 1) / 2.0) * sz).astype(np.float32)
    zz, yy, xx = np.meshgrid(z, axes[1], axes[0], indexing="ij")
    return np.stack([xx, yy, zz]), origin


def _dot(vector, points: np.ndarray) -> np.ndarray:
    """``vector . points`` for every point of (3, ...) (faster than tensordot on big grids)."""
    v = [np.float32(c) for c in vector]
    return v[0] * points[0] + v[1] * points[1] + v[2] * points[2]


def _rotate(rotation: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``rotation.T @ p`` for every point: world positions into a rotated frame."""
    return np.stack([_dot(rotation[:, i], points) for i in range(3)])


def _ellipsoid(points: np.ndarray, centre, axes, rotation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ellipsoid radius of every point (1 on the surface) and the unit vector
    from the centre to the point (in the ellipsoid's own frame)."""
    rel = points - np.asarray(centre, dtype=np.float32).reshape(3, *([1] * (points.ndim - 1)))
    if rotation is not None:
        rel = _rotate(rotation, rel)
    scaled = rel / np.asarray(axes, dtype=np.float32).reshape(3, *([1] * (points.ndim - 1)))
    rho = np.sqrt((scaled**2).sum(axis=0))
    unit = rel / (np.sqrt((rel**2).sum(axis=0)) + 1e-6)
    return rho, unit


def _direction_field(unit: np.ndarray, rng: np.random.Generator, count: int, frequency: float) -> np.ndarray:
    """A smooth random function of direction (about unit variance): lobes of a surface."""
    field = np.zeros(unit.shape[1:], dtype=np.float32)
    for d, phase in zip(random_unit_vectors(count, rng), rng.uniform(0.0, 2.0 * np.pi, count)):
        field += np.cos(np.float32(np.pi * frequency) * _dot(d, unit) + np.float32(phase))
    return field * np.float32(np.sqrt(2.0 / count))


def _position_field(points: np.ndarray, rng: np.random.Generator, count: int, wavelength_mm: Range) -> np.ndarray:
    """A smooth random function of position (about unit variance): a sum of plane waves."""
    field = np.zeros(points.shape[1:], dtype=np.float32)
    for d in random_unit_vectors(count, rng):
        k = 2.0 * np.pi / uniform(rng, wavelength_mm)
        field += np.cos(_dot(k * d, points) + np.float32(rng.uniform(0.0, 2.0 * np.pi)))
    return field * np.float32(np.sqrt(2.0 / count))


def _soft(rho: np.ndarray, surface, radius_mm: float, edge_mm: float) -> np.ndarray:
    """Occupancy in [0, 1] of the inside of ``rho < surface``, with an edge ``edge_mm`` wide."""
    return sigmoid((surface - rho) * (radius_mm / edge_mm)).astype(np.float32)


def _pick_voxel(candidates: np.ndarray, rng: np.random.Generator) -> tuple[int, ...] | None:
    """One voxel index of a boolean mask, chosen by ``rng``; None when the mask is empty."""
    flat = np.flatnonzero(candidates)
    if flat.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], candidates.shape))


def _paint(image: np.ndarray, occupancy: np.ndarray, values: np.ndarray) -> None:
    """Blend tissue ``values`` (one per channel) into ``image`` (C, Z, Y, X) where occupied."""
    image += occupancy[None] * (values.reshape(-1, 1, 1, 1).astype(np.float32) - image)


def _tumour(points, spacing_zyx, brain, wm_occ, scale, rng, knobs) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Hard masks (necrosis, enhancing, edema) of one tumour, or None when none fits."""
    edge_vox = float(np.sqrt(np.sum(np.square(spacing_zyx))))  # a voxel's diagonal, mm
    inside = ndimage.distance_transform_edt(brain, sampling=spacing_zyx)
    side = 1.0 if rng.uniform() < 0.5 else -1.0  # +1: the patient's left hemisphere
    radius = uniform(rng, knobs["core_radius_mm"]) * scale
    elong = rng.uniform(0.85, 1.2, size=3)
    lobulation = rng.uniform(0.1, 0.25)
    reach = radius * float(elong.max()) * (1.0 + 1.5 * lobulation)  # farthest core point, mm
    lateral = side * points[0]
    centre_idx = None
    for _ in range(12):  # shrink the tumour until a place in the hemisphere holds it
        candidates = (inside > reach + edge_vox) & (lateral > max(8.0 * scale, 0.5 * reach))
        centre_idx = _pick_voxel(candidates, rng)
        if centre_idx is not None:
            break
        radius, reach = radius * 0.85, reach * 0.85
    if centre_idx is None:
        return None
    centre = points[(slice(None), *centre_idx)] + rng.uniform(-0.5, 0.5, 3).astype(np.float32) * spacing_zyx[::-1]

    rotation = random_rotation(rng)
    rho, unit = _ellipsoid(points, centre, radius * elong, rotation)
    surface = 1.0 + lobulation * _direction_field(unit, rng, int(rng.integers(4, 8)), 2.0)
    core = (rho < surface) & brain
    if not core.any():
        core[centre_idx] = True

    # necrotic core: what lies deeper than an irregular rim thickness; never touches the outside
    rim_mm = uniform(rng, knobs["rim_mm"]) * max(scale, 0.5)
    depth = ndimage.distance_transform_edt(core, sampling=spacing_zyx)
    rim = rim_mm * (1.0 + 0.35 * _direction_field(unit, rng, 5, 2.0))
    necrosis = (depth > rim) & ndimage.binary_erosion(core, structure=np.ones((3, 3, 3), bool))
    enhancing = core & ~necrosis

    # edema: an irregular, lobed region around the core, spreading along the white matter
    margin = uniform(rng, knobs["edema_margin_mm"]) * scale
    e_rho, e_unit = _ellipsoid(points, centre, (radius + margin) * rng.uniform(0.8, 1.25, size=3), random_rotation(rng))
    e_surface = 1.0 + rng.uniform(0.25, 0.4) * _direction_field(e_unit, rng, int(rng.integers(5, 9)), 2.5)
    ring = ndimage.binary_dilation(core, structure=np.ones((3, 3, 3), bool))
    edema = (((e_rho < e_surface) & (wm_occ > 0.3)) | ring) & brain & ~core
    return necrosis, enhancing, edema


def _render_subject(size, spacing, rng: np.random.Generator, knobs: dict):
    """(image (C, Z, Y, X) float32, label (Z, Y, X) uint8, brain mask, origin) of one subject."""
    points, origin = _grid(size, spacing)
    spacing_zyx = np.array(spacing[::-1], dtype=np.float32)
    half_fov = np.array(size) * np.array(spacing) / 2.0
    head_axes = _HEAD_MM * rng.uniform(0.92, 1.06, size=3)
    scale = float(min(1.0, np.min(half_fov / (head_axes * 1.06 + 2.0))))
    head_axes = head_axes * scale
    centre = rng.uniform(-3.0, 3.0, size=3) * scale
    edge = 0.5 * float(np.min(spacing))  # soft edges: partial volume
    r_mean = float(np.cbrt(np.prod(head_axes)))

    # nested shells share one ellipsoid and one smooth deformation of the head
    tilt = _random_rotation_small(rng, degrees=6.0)
    rho, _ = _ellipsoid(points, centre, head_axes, tilt)
    head_shape = 1.0 + 0.03 * _position_field(points, rng, 6, (80.0 * scale + 1.0, 160.0 * scale + 2.0))
    scalp_mm, skull_mm, csf_mm = rng.uniform(4.0, 7.0) * scale, rng.uniform(5.0, 8.0) * scale, rng.uniform(2.0, 4.5) * scale
    gyri = 0.025 * _position_field(points, rng, 10, (15.0 * scale + 1.0, 35.0 * scale + 2.0))

    def shell(depth_mm: float, extra=0.0) -> np.ndarray:
        return _soft(rho, head_shape * (1.0 - depth_mm / r_mean) + extra, r_mean, edge)

    head = shell(0.0)
    skull = shell(scalp_mm)
    intracranial = shell(scalp_mm + skull_mm)
    brain_occ = shell(scalp_mm + skull_mm + csf_mm, gyri)
    cortex = rng.uniform(0.12, 0.17)  # grey-matter ribbon, as a fraction of the radius
    wm_occ = _soft(rho, head_shape * (1.0 - (scalp_mm + skull_mm + csf_mm) / r_mean) * (1.0 - cortex) + 2.5 * gyri, r_mean, edge)
    wm_occ = np.minimum(wm_occ, brain_occ)

    # deep grey nuclei and lateral ventricles, either side of the midline
    s = scale
    deep = np.zeros_like(head)
    ventricles = np.zeros_like(head)
    v_size = rng.uniform(0.8, 1.4)  # ventricles widen with age / atrophy
    for hemi in (-1.0, 1.0):
        c = centre + np.array([hemi * 17.0, -2.0, 2.0]) * s + rng.uniform(-2.0, 2.0, 3) * s
        r, _ = _ellipsoid(points, c, np.array([8.0, 13.0, 9.0]) * s * rng.uniform(0.9, 1.1, 3))
        deep = np.maximum(deep, _soft(r, 1.0, 9.0 * s, edge))
        body = centre + np.array([hemi * 6.5, -4.0, 12.0]) * s
        r, _ = _ellipsoid(points, body, np.array([4.5 * v_size, 25.0, 7.0 * v_size]) * s, _random_rotation_small(rng, 8.0))
        ventricles = np.maximum(ventricles, _soft(r, 1.0, 6.0 * s, edge))
        horn = centre + np.array([hemi * 13.0, 24.0, 0.0]) * s
        r, _ = _ellipsoid(points, horn, np.array([4.0 * v_size, 11.0, 8.0 * v_size]) * s, _random_rotation_small(rng, 15.0))
        ventricles = np.maximum(ventricles, _soft(r, 1.0, 5.0 * s, edge))
    third, _ = _ellipsoid(points, centre, np.array([1.8 * v_size, 12.0, 8.0]) * s)
    ventricles = np.maximum(ventricles, _soft(third, 1.0, 4.0 * s, edge)) * wm_occ
    # interhemispheric fissure: a CSF sheet above the corpus callosum and at both poles
    rel = points - centre.reshape(3, 1, 1, 1).astype(np.float32)
    sheet = sigmoid((1.2 * s + 0.3 * edge - np.abs(rel[0])) / (0.5 * edge))
    above = np.maximum(sigmoid((rel[2] - 22.0 * s) / edge), sigmoid((np.abs(rel[1]) - 50.0 * s) / edge))
    fissure = (sheet * above).astype(np.float32) * brain_occ

    brain = brain_occ >= 0.5
    label = np.zeros(brain.shape, dtype=np.uint8)
    tumour = None
    if rng.uniform() < knobs["tumour_fraction"]:
        tumour = _tumour(points, spacing_zyx, brain, wm_occ, scale, rng, knobs)
    if tumour is not None:
        necrosis, enhancing, edema = tumour
        label[edema] = 2
        label[necrosis] = 1
        label[enhancing] = 4

    # tissue signals: per-subject jitter of every tissue on every sequence
    values = {name: np.array(v) * rng.uniform(0.94, 1.06, size=4) for name, v in _TISSUE.items()}
    image = np.zeros((4, *brain.shape), dtype=np.float32)
    _paint(image, head, values["scalp"])
    _paint(image, skull, values["skull"])
    _paint(image, intracranial, values["csf"])
    _paint(image, brain_occ, values["gm"])
    _paint(image, wm_occ, values["wm"])
    _paint(image, deep * wm_occ, values["deep_gm"])
    _paint(image, ventricles, values["csf"])
    _paint(image, fissure, values["csf"])
    # fine texture of healthy tissue (about 3 %)
    texture = ndimage.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), 1.0)
    image *= 1.0 + 0.03 * texture / (texture.std() + 1e-6)
    if tumour is not None:
        blur = 0.6  # voxels: tumour margins are blurred like partial volume
        whole = ndimage.gaussian_filter((label > 0).astype(np.float32), blur)
        core = ndimage.gaussian_filter(((label == 1) | (label == 4)).astype(np.float32), blur)
        necro = ndimage.gaussian_filter((label == 1).astype(np.float32), blur)
        _paint(image, whole * rng.uniform(0.85, 1.0), values["edema"])
        _paint(image, core, values["enhancing"])
        _paint(image, necro, values["necrosis"])
        # tumours are more heterogeneous than healthy tissue (about 8 %)
        blotches = ndimage.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), 1.0)
        image *= 1.0 + 0.08 * whole * blotches / (blotches.std() + 1e-6)

    # per-sequence gain, smooth multiplicative bias field, Rician noise
    for c in range(4):
        bias = np.exp(uniform(rng, knobs["bias"]) * _position_field(points, rng, 4, (250.0 * scale + 1.0, 500.0 * scale + 2.0)))
        gain = rng.uniform(600.0, 1400.0)
        sigma = uniform(rng, knobs["noise"]) * gain
        signal = image[c] * bias * gain
        real = signal + sigma * rng.standard_normal(signal.shape).astype(np.float32)
        imag = sigma * rng.standard_normal(signal.shape).astype(np.float32)
        image[c] = np.sqrt(real**2 + imag**2)
    if knobs["labels"] == "anatomy":  # from the tissues already drawn: the images stay the same
        label = _anatomy(intracranial, brain_occ, wm_occ, deep, ventricles, fissure, label > 0)
    return image, label, brain, origin


def _anatomy(intracranial, brain_occ, wm_occ, deep, ventricles, fissure, tumour) -> np.ndarray:
    """The anatomical label map (:data:`ANATOMY_NAMES`): each tissue where its occupancy
    reaches one half, in the order the tissues are painted (a later one covers an earlier)."""
    label = np.zeros(brain_occ.shape, dtype=np.uint8)
    label[intracranial >= 0.5] = 4
    label[brain_occ >= 0.5] = 1
    label[wm_occ >= 0.5] = 2
    label[deep * wm_occ >= 0.5] = 3
    label[(ventricles >= 0.5) | (fissure >= 0.5)] = 4
    label[tumour] = 5
    return label


def _random_rotation_small(rng: np.random.Generator, degrees: float) -> np.ndarray:
    """A rotation by small random angles (uniform within +-``degrees``) about x, y and z."""
    ax, ay, az = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def generate_brain_mri(
    *,
    n_patients: int,
    size: tuple[int, int, int] = (64, 64, 48),
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.5),
    seed: int = 0,
    tumour_fraction: float = 1.0,
    core_radius_mm: Range = (12.0, 24.0),
    rim_mm: Range = (2.5, 5.0),
    edema_margin_mm: Range = (6.0, 22.0),
    noise: Range = (0.02, 0.05),
    bias: Range = (0.05, 0.2),
    labels: str = "tumour",
) -> Iterator[Record]:
    """Yield synthetic multi-sequence brain MRI with a glioma, one :class:`Record` per subject.

    ``image`` is a float32 SimpleITK vector image with the channels of
    :data:`CHANNEL_NAMES` (T1, T1c, T2, FLAIR), ``size`` voxels (x, y, z) of ``spacing``
    mm (x, y, z), identity direction (LPS) and the volume centre at (0, 0, 0); ``mask``
    is the uint8 label map (:data:`LABEL_NAMES`: 0, 1 necrotic core, 2 edema, 4
    enhancing tumour) and ``roi`` the brain mask, both on the image's grid. ``label``
    is None (voxel labels only). ``image_id`` and ``patient_id`` are ``brain_p0003``.
    The default field of view (192 x 192 x 168 mm) holds the whole head.

    tumour_fraction
        Probability that a subject has a tumour (1: all do; the others are healthy).
    core_radius_mm
        Range of the tumour core's mean radius (before its irregular deformation).
    rim_mm
        Range of the mean thickness of the enhancing rim around the necrotic core.
    edema_margin_mm
        Range of how far the edema reaches beyond the core (before its lobes).
    noise
        Range of the Rician noise level, relative to white matter on each sequence.
    bias
        Range of the bias field's strength (standard deviation of its logarithm).
    labels
        The label map: ``tumour`` (the BraTS labels above) or ``anatomy``
        (:data:`ANATOMY_NAMES`: cortical and deep grey matter, white matter, CSF, and the
        tumour as one label, for registration). The images are the same either way.
    """
    if labels not in LABEL_MAPS:
        raise ValueError(f"labels={labels!r}: choose one of {list(LABEL_MAPS)}")
    size, spacing = checked_geometry(size, spacing)
    knobs = {
        "tumour_fraction": checked_fraction("tumour_fraction", tumour_fraction),
        "core_radius_mm": core_radius_mm,
        "rim_mm": rim_mm,
        "edema_margin_mm": edema_margin_mm,
        "noise": noise,
        "bias": bias,
        "labels": labels,
    }

    def render(rng):
        return _render_subject(size, spacing, rng, knobs)

    yield from subject_volumes("brain", 7, n_patients=n_patients, seed=seed, spacing=spacing, render=render)
