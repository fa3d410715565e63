"""Seeded synthetic short-axis cine MRI of a beating left ventricle (3D plus time), for
motion tracking and ejection fraction (book case study 6.6c).

Each subject is one cine: ``frames`` 3D frames over one cardiac cycle, frame 0 at end
diastole (ED). A frame is a stack of short-axis slices (balanced SSFP-like contrast):
bright blood in the left ventricle (LV) and a right-ventricle (RV) crescent, darker
myocardium around the LV, mid-grey tissue with a smooth texture, dark lungs either side,
Rician-like noise. The LV is a half ellipsoid (base at the top slice, apex below the
last), elliptical in plane, turned by a random angle. Over the cycle the blood pool's
radii shrink by one factor, ``sqrt(1 - EF)`` at end systole (ES, the middle frame), so
that the true ejection fraction is the drawn one; the myocardium thickens as it
contracts (its area in every slice is kept: incompressible muscle); the heart drifts a
little with breathing.

Every frame is one :class:`Record` (``cine_p0003_f05``; patient ``cine_p0003``) with its
label map (:data:`LABEL_NAMES`: 1 LV blood pool, 2 LV myocardium), so that tracked
labels can be scored per frame, and attributes ``frame``, ``frames`` and
``ef_percent`` (the drawn EF). Geometry as the other generators: ``size`` and
``spacing`` x, y, z, identity direction, volume centre at the origin.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.layout import Record
from casebook.synthetic.patients import IDENTITY_DIRECTION, array_checksum, checked_geometry, volume_images
from casebook.synthetic.primitives import Range, uniform

LABEL_NAMES = {0: "background", 1: "LV blood pool", 2: "LV myocardium"}
CLASS_NAMES = [LABEL_NAMES[v] for v in sorted(LABEL_NAMES)]
CHANNEL_NAMES = ["cine"]


def _frame(points, centre, axes_mm, wall_mm, angle, size_zyx, profile):
    """(blood, myocardium) masks of one frame: per slice, an ellipse of the LV cavity
    scaled by the long-axis ``profile`` and a wall around it."""
    x, y = points
    c, s = np.cos(angle), np.sin(angle)
    u = (c * (x - centre[0]) + s * (y - centre[1])) / axes_mm[0]
    v = (-s * (x - centre[0]) + c * (y - centre[1])) / axes_mm[1]
    rho = np.sqrt(u**2 + v**2)  # 1 on the cavity's edge at the widest slice
    blood = np.zeros(size_zyx, bool)
    wall = np.zeros(size_zyx, bool)
    mean_axis = float(np.sqrt(axes_mm[0] * axes_mm[1]))
    for z, scale in enumerate(profile):
        if scale <= 0:
            continue
        blood[z] = rho < scale
        # the wall keeps its area as the cavity shrinks: outer radius^2 - inner radius^2 fixed
        inner = scale * mean_axis
        outer = np.sqrt(inner**2 + wall_mm[z])
        wall[z] = (rho * mean_axis < outer) & ~blood[z]
    return blood, wall


def generate_cardiac_cine(
    *,
    n_patients: int,
    size: tuple[int, int, int] = (48, 48, 8),
    spacing: tuple[float, float, float] = (2.0, 2.0, 8.0),
    frames: int = 8,
    seed: int = 0,
    ef_percent: Range = (35.0, 70.0),
    noise: Range = (0.03, 0.06),
    drift_mm: float = 2.0,
) -> Iterator[Record]:
    """Yield the frames of ``n_patients`` synthetic cines, one :class:`Record` per frame.

    frames
        Frames per cycle (frame 0 end diastole, frame ``frames // 2`` end systole).
    ef_percent
        Range the true ejection fraction is drawn from.
    noise
        Range of the noise level, relative to the blood signal.
    drift_mm
        Largest in-plane drift of the heart with breathing.
    """
    size, spacing = checked_geometry(size, spacing)
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    nx, ny, nz = size
    xs = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    ys = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    points = np.meshgrid(xs, ys, indexing="xy")  # each (y, x)
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(size, spacing))
    half_fov = min(nx * spacing[0], ny * spacing[1]) / 2
    for index in range(n_patients):
        rng = np.random.default_rng([seed, 11, index])
        ef = uniform(rng, ef_percent) / 100.0
        axes_ed = np.array([rng.uniform(0.26, 0.32), rng.uniform(0.22, 0.28)]) * half_fov
        angle = rng.uniform(0, np.pi)
        centre = rng.uniform(-0.08, 0.08, 2) * half_fov
        wall_mm_thick = rng.uniform(0.16, 0.22) * half_fov
        # half ellipsoid along z: full width at the base (slice 0), closing below the last slice
        depth = nz * rng.uniform(1.05, 1.3)
        profile = np.sqrt(np.clip(1.0 - (np.arange(nz) / depth) ** 2, 0.0, None))
        inner_ed = profile * float(np.sqrt(axes_ed[0] * axes_ed[1]))
        wall_area = (inner_ed + wall_mm_thick) ** 2 - inner_ed**2  # per slice, kept over the cycle
        level = uniform(rng, noise)
        texture = ndimage.gaussian_filter(rng.standard_normal((nz, ny, nx)), (0, 3, 3))
        texture /= texture.std() + 1e-9
        breathing = rng.uniform(0, 2 * np.pi)
        rv_side = rng.choice([-1.0, 1.0])
        cine_id = f"cine_p{index:04d}"
        for f in range(frames):
            phase = (1 - np.cos(2 * np.pi * f / frames)) / 2  # 0 at ED, 1 at ES
            shrink = 1.0 - phase * (1.0 - np.sqrt(1.0 - ef))
            drift = drift_mm * np.array([np.sin(2 * np.pi * f / frames + breathing), 0.5 * np.cos(2 * np.pi * f / frames + breathing)])
            here = centre + drift
            blood, wall = _frame(points, here, axes_ed, wall_area, angle, (nz, ny, nx), profile * shrink)
            x, y = points
            lungs = (np.abs(x - here[0]) > 0.62 * half_fov) & (np.abs(y) < 0.8 * half_fov)
            rv_x = here[0] + rv_side * (axes_ed[0] + wall_mm_thick) * 1.1
            rv = ((x - rv_x) / (0.55 * axes_ed[0] * (0.8 + 0.2 * shrink))) ** 2 + ((y - here[1]) / (1.2 * axes_ed[1])) ** 2 < 1
            image = np.full((nz, ny, nx), 0.45) * (1 + 0.05 * texture)
            image[:, lungs] = 0.08
            image[:, rv & ~lungs] = 0.85
            image[wall] = 0.3
            image[blood] = 0.95
            image = ndimage.gaussian_filter(image, (0, 0.6, 0.6))
            real = image + level * rng.standard_normal(image.shape)
            imag = level * rng.standard_normal(image.shape)
            image = np.sqrt(real**2 + imag**2).astype(np.float32) * 1000.0
            label = np.zeros((nz, ny, nx), np.uint8)
            label[wall] = 2
            label[blood] = 1
            sitk_image, sitk_label, _ = volume_images(image[None], label, None, spacing, origin)
            yield Record(
                image_id=f"{cine_id}_f{f:02d}",
                patient_id=cine_id,
                label=None,
                image=sitk_image,
                spacing=spacing,
                mask=sitk_label,
                origin=origin,
                direction=IDENTITY_DIRECTION,
                attributes={"frame": str(f), "frames": str(frames), "ef_percent": f"{100 * ef:.2f}"},
                source_checksum=array_checksum(image, label),
            )
