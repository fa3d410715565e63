"""Seeded synthetic abdominal CT with organ and lesion labels, for segmentation.

Each subject is one 3D volume in Hounsfield units (HU), one channel ("CT"), of the upper
abdomen: air around the body (-1000 HU), subcutaneous fat (about -100 HU), the muscular
abdominal wall (about 45 HU), the lumbar spine (vertebral bodies of dense bone with
intervertebral discs, posterior elements, spinal canal), paraspinal and psoas muscles,
aorta and inferior vena cava, the lung bases in the top slices, a stomach with fluid and
a gas cap, bowel loops (with some gas) in mesenteric fat, and the labelled organs:

* the liver (about 60 HU): a large right lobe on the patient's right and a smaller left
  lobe crossing the midline anteriorly;
* two kidneys (about 30 HU, unenhanced), posterior, either side of the spine, the right
  one lower; their hilum faces antero-medially and holds renal-sinus fat (not labelled);
* the spleen (about 45 HU), postero-lateral on the patient's left.

Optional lesions: hypodense liver lesions (30-50 HU below the liver) and one kidney lesion, a cyst
(0-15 HU) or a solid tumour (32-45 HU, nearly isodense to the kidney as on unenhanced CT)
that may bulge out of the kidney. Organ shapes are smooth deformed ellipsoids; the noise
is correlated in-plane (reconstruction kernel). Each slice is the mean of three thin
sub-slices, so thick slices show partial volume along z.

Label map (:data:`LABEL_NAMES`); later values overwrite earlier ones, so a lesion voxel
is labelled as the lesion, not as its organ::

    0 background, 1 liver, 2 kidney, 3 spleen, 4 liver lesion, 5 kidney lesion

The record's ``roi`` is the body mask (everything inside the skin), which holds every
labelled voxel.

Geometry and orientation: ``size`` and ``spacing`` are in SimpleITK order (x, y, z);
arrays taken from the images are (z, y, x). The direction is the identity, so the axes
are LPS (DICOM's patient axes): +x towards the patient's left, +y posterior, +z superior
(head); the origin puts the volume centre at (0, 0, 0) mm. ``array[z]`` shown with
matplotlib's ``imshow`` (row 0 at the top) is therefore in radiological display
convention: anterior at the top, the patient's right (the liver) on the image's left,
the spine at the bottom. The default field of view is 320 x 320 mm in-plane (5 mm
pixels) and 240 mm along z (7.5 mm slices: thick slices, anisotropic voxels).

Every subject is drawn from ``numpy.random.default_rng([seed, 8, index])``: subject
``index`` is the same whatever ``n_patients`` is.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.layout import Record
from casebook.synthetic.brain_mri import (
    _direction_field,
    _ellipsoid,
    _grid,
    _pick_voxel,
    _position_field,
    _random_rotation_small,
    _soft,
)
from casebook.synthetic.nodule_ct import HU_MAX, HU_MIN
from casebook.synthetic.patients import checked_fraction, checked_geometry, subject_volumes
from casebook.synthetic.primitives import correlated_noise, sigmoid, uniform

#: Channel names (one CT channel).
CHANNEL_NAMES = ["CT"]

#: Voxel label value -> name.
LABEL_NAMES = {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "liver lesion", 5: "kidney lesion"}

#: Names indexed by label value, as a case study's ``class_names`` lists them.
CLASS_NAMES = [LABEL_NAMES[value] for value in range(len(LABEL_NAMES))]

Range = tuple[float, float]

#: Sub-slices rendered per slice to model slice-thickness partial volume.
_SUBSLICES = 3


def _ellipse2d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, edge: float) -> np.ndarray:
    """Soft occupancy of an axis-aligned ellipse in one slice (broadcasts along z)."""
    rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return _soft(rho, 1.0, float(np.sqrt(ax * ay)), edge)


def _organ(points, centre, axes, rotation, rng, edge, lobulation=0.05) -> np.ndarray:
    """Soft occupancy of a smoothly deformed ellipsoid (an organ or a lesion)."""
    rho, unit = _ellipsoid(points, centre, axes, rotation)
    surface = 1.0 + lobulation * _direction_field(unit, rng, 5, 1.5)
    return _soft(rho, surface, float(np.cbrt(np.prod(axes))), edge)


def _rot_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _rot_y(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def _thick(fine: np.ndarray, nz: int) -> np.ndarray:
    """Average the sub-slices of a (Z * sub, Y, X) array into (Z, Y, X) thick slices."""
    return fine.reshape(nz, -1, *fine.shape[1:]).mean(axis=1)


def _render_subject(size, spacing, rng: np.random.Generator, knobs: dict):
    """(HU image (Z, Y, X) int16, label (Z, Y, X) uint8, body mask, origin) of one subject."""
    nz = size[2]
    points, origin = _grid(size, spacing, _SUBSLICES)
    x2, y2 = points[0, :1], points[1, :1]  # one slice (1, Y, X): cross-sections broadcast along z
    z = points[2]
    spacing_zyx = np.array(spacing[::-1], dtype=np.float32)
    edge = 0.4 * float(min(spacing[0], spacing[1]))

    # ---- body wall, spine and muscles: cross-sections constant along z
    ax, ay, cy = rng.uniform(122.0, 148.0), rng.uniform(92.0, 115.0), rng.uniform(-8.0, 8.0)
    fat, wall = rng.uniform(12.0, 35.0), rng.uniform(8.0, 14.0)
    body = _ellipse2d(x2, y2, 0.0, cy, ax, ay, edge)
    inner_wall = _ellipse2d(x2, y2, 0.0, cy, ax - fat, ay - fat, edge)
    cavity = _ellipse2d(x2, y2, 0.0, cy, ax - fat - wall, ay - fat - wall, edge)
    rv = rng.uniform(16.0, 21.0)  # vertebral body radius
    ys = cy + ay - 0.6 * fat - rng.uniform(62.0, 72.0)  # vertebral body centre (y)
    vertebra = _ellipse2d(x2, y2, 0.0, ys, 1.15 * rv, rv, edge)
    cancellous = _ellipse2d(x2, y2, 0.0, ys, 1.15 * rv - 3.0, rv - 3.0, edge)
    yc = ys + rv + 9.0  # spinal canal
    canal = _ellipse2d(x2, y2, 0.0, yc, 8.0, 7.0, edge)
    arch = _ellipse2d(x2, y2, 0.0, yc, 14.0, 13.0, edge)
    spinous = sigmoid((4.0 - np.abs(x2)) / edge) * sigmoid((12.0 - np.abs(y2 - yc - 24.0)) / edge)
    transverse = sigmoid((36.0 - np.abs(x2)) / edge) * sigmoid((4.0 - np.abs(y2 - ys - rv - 2.0)) / edge)
    posterior = np.maximum(np.maximum(arch, spinous), transverse) * (1.0 - canal)
    paraspinal = (
        np.maximum(
            _ellipse2d(x2, y2, -(rv + 18.0), yc + 14.0, 21.0, 24.0, edge), _ellipse2d(x2, y2, rv + 18.0, yc + 14.0, 21.0, 24.0, edge)
        )
        * body
    )
    psoas_r = 9.0 + np.clip(-z, 0.0, None) * 0.12  # the psoas grows towards the pelvis
    psoas = np.maximum(
        *(_soft(np.sqrt((x2 - side * (rv + 14.0)) ** 2 + (y2 - ys + 2.0) ** 2) / psoas_r, 1.0, 10.0, edge) for side in (-1, 1))
    )
    block = np.maximum(np.maximum(vertebra, posterior), np.maximum(paraspinal, psoas))  # no organ goes there
    ax_aorta = rng.uniform(9.0, 12.0)
    aorta = _ellipse2d(x2, y2, rng.uniform(5.0, 15.0), ys - rv - ax_aorta - 2.0, ax_aorta, ax_aorta, edge)
    ivc = _ellipse2d(x2, y2, -rng.uniform(18.0, 26.0), ys - rv - 12.0, 12.0, 9.0, edge)
    vessels = np.maximum(aorta, ivc)
    free = cavity * (1.0 - block) * (1.0 - vessels)  # where organs may lie

    # ---- organs (3D), made mutually exclusive: kidney, then spleen, then liver
    kidneys = np.zeros(points.shape[1:], dtype=np.float32)
    sinus = np.zeros_like(kidneys)
    perirenal = np.zeros_like(kidneys)  # the fat around each kidney that makes it stand out
    kz = rng.uniform(-45.0, -20.0)
    for side, dz in ((-1.0, 0.0), (1.0, rng.uniform(10.0, 25.0))):  # right kidney lower
        centre = np.array([side * rng.uniform(58.0, 70.0), ys + rng.uniform(-6.0, 8.0), kz + dz])
        semi = np.array([rng.uniform(22.0, 27.0), rng.uniform(25.0, 30.0), rng.uniform(48.0, 58.0)])
        # upper pole medial (tilt about y), hilum facing antero-medially (turn about z)
        rotation = _rot_z(-side * rng.uniform(20.0, 35.0)) @ _rot_y(side * rng.uniform(10.0, 20.0))
        kidneys = np.maximum(kidneys, _organ(points, centre, semi, rotation, rng, edge, 0.03))
        r, _ = _ellipsoid(points, centre, semi + rng.uniform(8.0, 15.0), rotation)
        perirenal = np.maximum(perirenal, _soft(r, 1.0, 35.0, edge))
        hilum = centre + rotation @ np.array([-side * 0.6 * semi[0], 0.0, 0.0])
        r, _ = _ellipsoid(points, hilum, np.array([9.0, 11.0, 0.45 * semi[2]]), rotation)
        sinus = np.maximum(sinus, _soft(r, 1.0, 10.0, edge))
    kidneys = kidneys * free
    perirenal = perirenal * free
    sinus = sinus * kidneys
    kidney = kidneys - sinus
    spleen = (
        _organ(
            points,
            np.array([rng.uniform(80.0, 95.0), cy + rng.uniform(15.0, 35.0), rng.uniform(35.0, 60.0)]),
            np.array([rng.uniform(22.0, 30.0), rng.uniform(45.0, 60.0), rng.uniform(45.0, 60.0)]),
            _rot_z(-rng.uniform(25.0, 45.0)),
            rng,
            edge,
        )
        * free
        * (1.0 - kidneys)
    )
    zl = rng.uniform(20.0, 45.0)
    right_lobe = _organ(
        points,
        np.array([-rng.uniform(55.0, 70.0), cy + rng.uniform(-15.0, 0.0), zl]),
        np.array([rng.uniform(65.0, 80.0), rng.uniform(70.0, 85.0), rng.uniform(70.0, 85.0)]),
        _random_rotation_small(rng, 10.0),
        rng,
        edge,
    )
    left_lobe = _organ(
        points,
        np.array([rng.uniform(5.0, 20.0), cy - rng.uniform(35.0, 45.0), zl + 15.0]),
        np.array([rng.uniform(45.0, 60.0), rng.uniform(30.0, 38.0), rng.uniform(35.0, 45.0)]),
        _random_rotation_small(rng, 10.0),
        rng,
        edge,
    )
    liver = np.maximum(right_lobe, left_lobe) * free * (1.0 - kidneys) * (1.0 - spleen)
    stomach_centre = np.array([rng.uniform(35.0, 55.0), cy - rng.uniform(30.0, 45.0), zl + rng.uniform(10.0, 30.0)])
    stomach_semi = np.array([rng.uniform(30.0, 40.0), rng.uniform(25.0, 32.0), rng.uniform(35.0, 50.0)])
    stomach = (
        _organ(
            points,
            stomach_centre,
            stomach_semi,
            _random_rotation_small(rng, 15.0),
            rng,
            edge,
        )
        * free
        * (1.0 - kidneys)
        * (1.0 - spleen)
        * (1.0 - liver)
    )
    lungs = np.zeros_like(kidneys)
    for side in (-1.0, 1.0):
        r, _ = _ellipsoid(points, np.array([side * 75.0, cy + 25.0, zl + rng.uniform(130.0, 160.0)]), np.array([62.0, 75.0, 90.0]))
        lungs = np.maximum(lungs, _soft(r, 1.0, 70.0, edge))
    lungs = lungs * free * (1.0 - liver) * (1.0 - spleen) * (1.0 - stomach)
    # bowel loops in mesenteric fat, with pockets of gas
    loops = _position_field(points, rng, 8, (35.0, 70.0))
    bowel = sigmoid((loops - 0.5) / 0.15) * free * (1.0 - perirenal)
    gas = sigmoid((_position_field(points, rng, 8, (25.0, 50.0)) - 1.7) / 0.1) * bowel

    # ---- lesions, placed on the thick-slice organ masks
    liver_mask = _thick(liver, nz) >= 0.5
    kidney_mask = _thick(kidney, nz) >= 0.5
    liver_lesions = np.zeros_like(kidneys)
    liver_lesion_occs = []
    n_liver = int(rng.integers(knobs["liver_lesion_count"][0], knobs["liver_lesion_count"][1] + 1))
    if not rng.uniform() < knobs["liver_lesion_fraction"]:
        n_liver = 0
    depth = ndimage.distance_transform_edt(liver_mask, sampling=spacing_zyx) if n_liver else None
    for _ in range(n_liver):
        radius = uniform(rng, knobs["liver_lesion_diameter_mm"]) / 2.0
        idx = _pick_voxel(depth > min(0.6 * radius + 2.0, 0.8 * depth.max()), rng)
        if idx is None:
            continue
        centre = points[:, idx[0] * _SUBSLICES + _SUBSLICES // 2, idx[1], idx[2]]
        occ = _organ(points, centre, radius * rng.uniform(0.85, 1.15, 3), None, rng, edge, 0.08)
        liver_lesions = np.maximum(liver_lesions, occ)
        liver_lesion_occs.append(occ)
    liver_lesions = liver_lesions * liver
    kidney_lesion = np.zeros_like(kidneys)
    cyst = bool(rng.uniform() < 0.5)
    if rng.uniform() < knobs["kidney_lesion_fraction"] and kidney_mask.any():
        radius = uniform(rng, knobs["kidney_lesion_diameter_mm"]) / 2.0
        # one kidney (its voxels on one side of the midline), the lesion may bulge out of it
        side = -1.0 if rng.uniform() < 0.5 else 1.0
        on_side = kidney_mask & (side * points[0, ::_SUBSLICES] > 0)
        idx = _pick_voxel(on_side if on_side.any() else kidney_mask, rng)
        centre = points[:, idx[0] * _SUBSLICES + _SUBSLICES // 2, idx[1], idx[2]]
        kidney_lesion = _organ(points, centre, radius * rng.uniform(0.9, 1.1, 3), None, rng, edge, 0.02 if cyst else 0.1)
        kidney_lesion = kidney_lesion * cavity * (1.0 - block) * (1.0 - vessels)

    # ---- Hounsfield units, painted from the outside in
    fine_shape = points.shape[1:]
    hu = np.full(fine_shape, -1000.0, dtype=np.float32)

    def paint(occupancy, value) -> None:
        nonlocal hu
        hu = hu + occupancy * (np.float32(value) - hu)

    fat_hu = rng.uniform(-115.0, -85.0)
    muscle_hu = rng.uniform(40.0, 55.0)
    paint(body, fat_hu)
    paint(inner_wall, muscle_hu)
    paint(cavity, fat_hu + 5.0)  # mesenteric and retroperitoneal fat
    paint(bowel, rng.uniform(20.0, 40.0))
    paint(gas, -900.0)
    paint(paraspinal, muscle_hu)
    paint(psoas * body, muscle_hu - 5.0)
    paint(lungs, rng.uniform(-880.0, -820.0))
    paint(stomach, rng.uniform(10.0, 25.0))
    # the patient lies supine: gas floats anteriorly (towards -y) on the gastric fluid
    level = stomach_centre[1] - stomach_semi[1] * rng.uniform(0.2, 0.7)
    gas_cap = stomach * sigmoid((level - points[1]) / 2.0)
    paint(gas_cap, -950.0)
    liver_hu = rng.uniform(55.0, 70.0)
    paint(liver, liver_hu)
    paint(kidney, rng.uniform(30.0, 42.0))
    paint(sinus, fat_hu + 30.0)
    paint(spleen, rng.uniform(44.0, 56.0))
    paint(vessels * body, rng.uniform(35.0, 45.0))
    # vertebrae: cortical shell, cancellous bone, discs every ~30 mm, posterior elements
    period, phase = rng.uniform(28.0, 34.0), rng.uniform(0.0, 34.0)
    disc = sigmoid((4.0 - np.abs(((z + phase) % period) - period / 2.0)) / 1.0)
    bone_hu = rng.uniform(400.0, 600.0)
    paint(vertebra * (1.0 - disc), bone_hu + 350.0)
    paint(cancellous * (1.0 - disc), bone_hu)
    paint(vertebra * disc, 85.0)
    paint(posterior, bone_hu + 250.0)
    paint(canal, 15.0)
    for occ in liver_lesion_occs:
        paint(occ * liver, liver_hu - uniform(rng, (30.0, 50.0)))  # hypodense: 5-40 HU
    paint(kidney_lesion, uniform(rng, (0.0, 15.0) if cyst else (32.0, 45.0)))

    hu = _thick(hu, nz)
    hu = hu + correlated_noise(hu.shape, uniform(rng, knobs["noise_hu"]), rng)
    image = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)

    label = np.zeros(hu.shape, dtype=np.uint8)
    for value, occupancy in ((1, liver), (2, kidney), (3, spleen), (4, liver_lesions), (5, kidney_lesion)):
        label[_thick(occupancy, nz) >= 0.5] = value
    roi = np.broadcast_to(body[0] >= 0.5, hu.shape)
    label[~roi] = 0  # organs lie in the cavity, inside the body: a guarantee, not a change
    return image, label, roi, origin


def generate_abdomen_ct(
    *,
    n_patients: int,
    size: tuple[int, int, int] = (64, 64, 32),
    spacing: tuple[float, float, float] = (5.0, 5.0, 7.5),
    seed: int = 0,
    liver_lesion_fraction: float = 0.5,
    liver_lesion_count: tuple[int, int] = (1, 3),
    liver_lesion_diameter_mm: Range = (20.0, 50.0),
    kidney_lesion_fraction: float = 0.4,
    kidney_lesion_diameter_mm: Range = (15.0, 40.0),
    noise_hu: Range = (10.0, 20.0),
) -> Iterator[Record]:
    """Yield synthetic abdominal CT volumes, one :class:`Record` per subject.

    ``image`` is an int16 SimpleITK image in HU with ``size`` voxels (x, y, z) of
    ``spacing`` mm (x, y, z), identity direction (LPS) and the volume centre at
    (0, 0, 0); ``mask`` is the uint8 label map (:data:`LABEL_NAMES`: 1 liver, 2
    kidney, 3 spleen, 4 liver lesion, 5 kidney lesion) and ``roi`` the body mask, both
    on the image's grid. ``label`` is None (voxel labels only). ``image_id`` and
    ``patient_id`` are ``abdomen_p0003``. Anatomy is in mm: a smaller field of view
    cuts it, a finer grid resolves it better.

    liver_lesion_fraction, liver_lesion_count, liver_lesion_diameter_mm
        Probability that a subject has liver lesions, the inclusive range of their
        number, and the range of their diameter (mm).
    kidney_lesion_fraction, kidney_lesion_diameter_mm
        Probability that a subject has one kidney lesion (half cysts, half solid
        tumours), and the range of its diameter (mm).
    noise_hu
        Range of the per-subject noise standard deviation (HU).
    """
    size, spacing = checked_geometry(size, spacing)
    lo, hi = (int(v) for v in liver_lesion_count)
    if not 1 <= lo <= hi:
        raise ValueError(f"liver_lesion_count must be (lo, hi) with 1 <= lo <= hi, got {liver_lesion_count}")
    knobs = {
        "liver_lesion_fraction": checked_fraction("liver_lesion_fraction", liver_lesion_fraction),
        "liver_lesion_count": (lo, hi),
        "liver_lesion_diameter_mm": liver_lesion_diameter_mm,
        "kidney_lesion_fraction": checked_fraction("kidney_lesion_fraction", kidney_lesion_fraction),
        "kidney_lesion_diameter_mm": kidney_lesion_diameter_mm,
        "noise_hu": noise_hu,
    }

    def render(rng):
        image, label, roi, origin = _render_subject(size, spacing, rng, knobs)
        return image[None], label, roi, origin

    yield from subject_volumes("abdomen", 8, n_patients=n_patients, seed=seed, spacing=spacing, render=render)
