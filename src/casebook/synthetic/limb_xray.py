"""Seeded synthetic limb radiographs with fractures, for fracture localization (book case
study 6.2c).

A radiograph is the attenuation of X-rays through a limb, drawn in millimetres: a soft
tissue band around a long bone at a random angle. The bone is a hollow cylinder, so its
projected thickness is the chord through a cortical shell (bright edges) around a
medullary cavity with a trabecular texture towards the ends. A fractured bone is cut
along a line across it (60 to 120 degrees to its axis): a dark gap, and the far piece
shifted along and across the bone (a displaced fracture) or not at all (a hairline one,
the subtle cases). Detector blur and quantum noise finish it; intensities are 0 to 1,
bright bone. Each image is one :class:`Record` (``limb_p0003``) with one
:class:`casebook.boxes.Box` per fracture (the cut's extent across the bone, with a
margin) and a label map (1 on the fracture's gap inside the bone); the image label is
1 (fractured) or 0.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.boxes import Box
from casebook.layout import Record
from casebook.synthetic.patients import array_checksum, checked_fraction
from casebook.synthetic.primitives import Range, uniform

CLASS_NAMES = ["no fracture", "fracture"]
#: margin around a fracture's cut in its box (mm)
_MARGIN_MM = 2.0


def _chord(v: np.ndarray, radius: float) -> np.ndarray:
    """Length (mm) of a line at distance ``v`` from a cylinder's axis through it."""
    return 2.0 * np.sqrt(np.clip(radius**2 - v**2, 0.0, None))


def _bone(u: np.ndarray, v: np.ndarray, outer: float, inner: float, length: float, texture: np.ndarray) -> np.ndarray:
    """Attenuation (mm of cortical-bone equivalent) of a hollow long bone along its local
    axes: ``u`` along it (centred), ``v`` across it."""
    inside = np.abs(u) <= length / 2
    cortex = _chord(v, outer) - _chord(v, inner)
    ends = np.clip(np.abs(u) / (length / 2), 0.0, 1.0) ** 2  # trabecular bone near the ends
    medulla = _chord(v, inner) * (0.08 + 0.25 * ends * texture)
    return (cortex + medulla) * inside


def _render(size: int, spacing: float, fractured: bool, rng: np.random.Generator, knobs: dict):
    """One radiograph, its label map and its fracture boxes (pixel corners x0, y0, x1, y1)."""
    half = size * spacing / 2
    axis = (np.arange(size) + 0.5) * spacing - half
    y, x = np.meshgrid(axis, axis, indexing="ij")
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    offset = rng.uniform(-0.15, 0.15) * half  # the bone's axis off the image centre
    u = x * direction[0] + y * direction[1]
    v = -x * direction[1] + y * direction[0] + offset
    outer = uniform(rng, knobs["bone_radius_mm"])
    inner = outer * rng.uniform(0.5, 0.65)
    length = 2 * half * rng.uniform(1.2, 1.6)  # the bone runs across the whole field
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.2)
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-9)
    tissue = _chord(v, outer * rng.uniform(2.2, 3.0)) * 0.08  # the soft tissue around it
    label = np.zeros((size, size), np.uint8)
    boxes = []
    if fractured:
        # the cut: a line across the bone through a point on its axis
        at = rng.uniform(-0.3, 0.3) * half
        tilt = rng.uniform(np.deg2rad(-30), np.deg2rad(30))  # the cut at 60-120 degrees to the axis
        normal = np.array([np.cos(tilt), np.sin(tilt)])  # the cut's normal, in (u, v)
        side = (u - at) * normal[0] + v * normal[1]
        subtle = rng.uniform() < knobs["subtle_fraction"]
        shift = np.zeros(2) if subtle else rng.uniform(0.3, 1.0, 2) * knobs["displacement_mm"] * rng.choice([-1, 1], 2)
        far = side > 0
        gap = (0.35 if subtle else 1.0) * uniform(rng, knobs["gap_mm"])
        near_bone = _bone(u, v, outer, inner, length, texture)
        far_bone = _bone(u - shift[0], v - shift[1], outer, inner, length, texture)
        bone = np.where(far, far_bone, near_bone) * (1.0 - (0.85 if not subtle else 0.5) * (np.abs(side) < gap / 2))
        inside_bone = (np.abs(v) <= outer) & (np.abs(side) < max(gap / 2, spacing))
        label[inside_bone] = 1
        # the box: the cut where it crosses the bone (|v| within the outer radius, and the
        # shifted piece's), back from the bone's axes (u, v) to the image's (x, y) in mm
        t = np.linspace(-3 * outer, 3 * outer, 400)
        line_u, line_v = at - normal[1] * t, normal[0] * t
        keep = np.abs(line_v) <= outer + np.abs(shift[1])
        across = line_v[keep] - offset
        xs = line_u[keep] * direction[0] - across * direction[1]
        ys = line_u[keep] * direction[1] + across * direction[0]
        boxes.append((xs.min(), ys.min(), xs.max(), ys.max(), "hairline" if subtle else "displaced"))
    else:
        bone = _bone(u, v, outer, inner, length, texture)
    attenuation = 0.35 * bone + tissue
    image = 1.0 - np.exp(-attenuation * knobs["contrast"])
    image = ndimage.gaussian_filter(image, 0.6)
    image = image + rng.normal(0.0, uniform(rng, knobs["noise"]), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label, boxes


def generate_limb_xray(
    *,
    n_patients: int,
    size: int = 96,
    spacing: float = 0.5,
    seed: int = 0,
    prevalence: float = 0.6,
    subtle_fraction: float = 0.2,
    bone_radius_mm: Range = (5.0, 8.0),
    displacement_mm: float = 2.0,
    gap_mm: Range = (1.0, 2.0),
    contrast: float = 0.25,
    noise: Range = (0.01, 0.03),
) -> Iterator[Record]:
    """Yield ``n_patients`` radiographs (``size`` pixels of ``spacing`` mm), one each.

    prevalence
        Share of fractured images (the image label).
    subtle_fraction
        Share of fractures that are hairline: no displacement, a faint gap.
    bone_radius_mm, displacement_mm, gap_mm
        The bone's outer radius, the largest shift of the far piece, the gap's width.
    contrast, noise
        Attenuation scale of the image, range of the noise level.
    """
    checked_fraction("prevalence", prevalence)
    knobs = {
        "subtle_fraction": checked_fraction("subtle_fraction", subtle_fraction),
        "bone_radius_mm": tuple(float(r) for r in bone_radius_mm),
        "displacement_mm": float(displacement_mm),
        "gap_mm": tuple(float(g) for g in gap_mm),
        "contrast": float(contrast),
        "noise": tuple(float(n) for n in noise),
    }
    size, spacing = int(size), float(spacing)
    origin = (-size * spacing / 2 + spacing / 2,) * 2
    for index in range(int(n_patients)):
        rng = np.random.default_rng([seed, 11, index])
        fractured = bool(rng.uniform() < prevalence)
        image, label, found = _render(size, spacing, fractured, rng, knobs)
        subject = f"limb_p{index:04d}"
        boxes = []
        for x0, y0, x1, y1, kind in found:
            # pixel-centre mm coordinates are the world's: the first pixel's centre is the origin
            x0, y0 = max(x0 - _MARGIN_MM, origin[0]), max(y0 - _MARGIN_MM, origin[1])
            x1, y1 = min(x1 + _MARGIN_MM, -origin[0]), min(y1 + _MARGIN_MM, -origin[1])
            boxes.append(Box(subject, "fracture", ((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), False, kind))
        yield Record(
            image_id=subject,
            patient_id=subject,
            label=int(fractured),
            image=image,
            spacing=(spacing, spacing),
            mask=label,
            origin=origin,
            source_checksum=array_checksum(image, label),
            boxes=boxes,
        )
