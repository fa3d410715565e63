"""Seeded synthetic mammograms with masses and calcification clusters, for mass
detection and malignancy (book case study 6.1b).

A craniocaudal view drawn in millimetres: the breast a half-ellipse against the chest
wall on the left edge, its fat bright only where fibroglandular tissue (smoothed noise,
denser near the chest wall) lies, the skin a thin brighter rim. Findings are placed
inside the breast, apart from each other:

- masses, denser than the tissue around them: ``circumscribed`` ones are smooth ovals,
  ``spiculated`` ones have a blurred margin and thin spicules radiating out;
- calcification clusters: five to twelve bright specks of 0.3 to 0.7 mm within a few mm.

Malignancy follows the finding's look, as a radiologist reads it, with noise: a
spiculated mass or a cluster is malignant with probability ``malignant_given_suspicious``,
a circumscribed mass with ``malignant_given_benign_look``. The image label is 1 when any
finding is malignant (malignancy classification), and each finding is a
:class:`casebook.boxes.Box` (class ``mass`` or ``calcification``, finding ``spiculated``,
``circumscribed`` or ``cluster``, with ``malignant`` or ``benign`` appended) with a label
map (1 mass, 2 calcification). Intensities are 0 to 1 after detector blur and noise.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from casebook.boxes import Box
from casebook.layout import Record
from casebook.synthetic.patients import array_checksum, checked_fraction
from casebook.synthetic.primitives import Range, uniform

CLASS_NAMES = ["not malignant", "malignant"]
#: margin around a finding in its box (mm)
_MARGIN_MM = 1.0


def _breast(x: np.ndarray, y: np.ndarray, depth: float, half_height: float) -> np.ndarray:
    """The breast's footprint: a half-ellipse from the chest wall (x = 0) to the nipple."""
    return (x >= 0) & ((x / depth) ** 2 + (y / half_height) ** 2 <= 1.0)


def _tissue(shape: tuple[int, int], spacing: float, x: np.ndarray, depth: float, density: float, rng) -> np.ndarray:
    """Fibroglandular tissue: smoothed noise above a threshold, denser near the chest wall."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5 / spacing)
    noise /= noise.std() + 1e-9
    gradient = 1.0 - np.clip(x / depth, 0.0, 1.0)
    return np.clip(noise + 2.0 * density * gradient - 1.0, 0.0, None)


def _mass(x, y, centre, radius, spiculated: bool, rng) -> np.ndarray:
    """A mass's added density: an oval, its margin blurred and spicules out when spiculated."""
    angle = rng.uniform(0, np.pi)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    ratio = rng.uniform(0.7, 1.0)
    r = np.sqrt((u / radius) ** 2 + (v / (radius * ratio)) ** 2)
    if not spiculated:
        return np.clip(1.0 - r**8, 0.0, 1.0)
    out = np.clip(1.0 - r**2, 0.0, 1.0)
    theta = np.arctan2(dy, dx)
    distance = np.hypot(dx, dy)
    for spoke in rng.uniform(-np.pi, np.pi, rng.integers(6, 12)):
        across = np.abs(np.sin(theta - spoke)) * distance
        along = np.cos(theta - spoke) * distance
        reach = radius * rng.uniform(1.6, 2.2)
        out = np.maximum(out, 0.6 * np.exp(-((across / 0.35) ** 2)) * ((along > 0) & (along < reach)) * (1 - along / reach))
    return out


def _cluster(x, y, centre, spread: float, rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bright specks around ``centre``; returns their density and their centres."""
    out, specks = np.zeros_like(x), []
    for _ in range(rng.integers(5, 13)):
        at = centre + rng.normal(0.0, spread / 2.5, 2)
        size = rng.uniform(0.3, 0.7)
        out = np.maximum(out, np.exp(-((x - at[0]) ** 2 + (y - at[1]) ** 2) / (2 * (size / 2) ** 2)))
        specks.append(at)
    return out, specks


def _render(size: tuple[int, int], spacing: float, rng: np.random.Generator, knobs: dict):
    """One mammogram, its label map and its findings (x0, y0, x1, y1 mm, class, finding)."""
    rows, cols = size
    xs = (np.arange(cols) + 0.5) * spacing
    ys = (np.arange(rows) + 0.5) * spacing - rows * spacing / 2
    y, x = np.meshgrid(ys, xs, indexing="ij")
    depth = cols * spacing * rng.uniform(0.75, 0.92)
    half_height = rows * spacing / 2 * rng.uniform(0.8, 0.95)
    breast = _breast(x, y, depth, half_height)
    density = uniform(rng, knobs["density"])
    image = 0.25 * breast + 0.15 * _tissue((rows, cols), spacing, x, depth, density, rng) * breast
    skin = breast & ~ndimage.binary_erosion(breast, iterations=max(1, int(round(1.0 / spacing))))
    image = image + 0.15 * skin
    label = np.zeros((rows, cols), np.uint8)
    found, centres = [], []
    n_findings = rng.integers(knobs["findings"][0], knobs["findings"][1] + 1) if rng.uniform() < knobs["prevalence"] else 0
    for _ in range(n_findings):
        for _attempt in range(30):  # inside the breast, apart from the others
            centre = np.array([rng.uniform(0.15, 0.75) * depth, rng.uniform(-0.6, 0.6) * half_height])
            if (centre[0] / depth) ** 2 + (centre[1] / half_height) ** 2 < 0.6 and all(np.hypot(*(centre - c)) > 14.0 for c in centres):
                break
        else:
            continue
        centres.append(centre)
        if rng.uniform() < knobs["calcification_fraction"]:
            specks, points = _cluster(x, y, centre, uniform(rng, knobs["cluster_mm"]), rng)
            image = image + knobs["contrast"] * 4.0 * specks  # calcium: far denser than tissue
            label[(specks > 0.5) & breast] = 2
            points = np.array(points)
            lo, hi = points.min(axis=0) - 0.5, points.max(axis=0) + 0.5
            kind, cls, malignant_p = "cluster", "calcification", knobs["malignant_given_suspicious"]
        else:
            radius = uniform(rng, knobs["mass_diameter_mm"]) / 2
            spiculated = bool(rng.uniform() < knobs["spiculated_fraction"])
            mass = _mass(x, y, centre, radius, spiculated, rng)
            image = image + knobs["contrast"] * mass
            label[(mass > 0.5) & breast & (label == 0)] = 1
            inside = np.argwhere(mass > 0.4)  # the mass, not the tips of its spicules
            lo = np.array([xs[inside[:, 1].min()], ys[inside[:, 0].min()]])
            hi = np.array([xs[inside[:, 1].max()], ys[inside[:, 0].max()]])
            kind, cls = ("spiculated", "mass") if spiculated else ("circumscribed", "mass")
            malignant_p = knobs["malignant_given_suspicious"] if spiculated else knobs["malignant_given_benign_look"]
        malignant = bool(rng.uniform() < malignant_p)
        found.append((*(lo - _MARGIN_MM), *(hi + _MARGIN_MM), cls, f"{kind} {'malignant' if malignant else 'benign'}", malignant))
    image = ndimage.gaussian_filter(image, 0.4 / spacing)
    image = image + rng.normal(0.0, uniform(rng, knobs["noise"]), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label, found


def generate_mammogram(
    *,
    n_patients: int,
    size: tuple[int, int] = (128, 96),
    spacing: float = 0.5,
    seed: int = 0,
    prevalence: float = 0.7,
    findings: tuple[int, int] = (1, 2),
    calcification_fraction: float = 0.3,
    spiculated_fraction: float = 0.5,
    mass_diameter_mm: Range = (6.0, 16.0),
    cluster_mm: Range = (3.0, 6.0),
    malignant_given_suspicious: float = 0.8,
    malignant_given_benign_look: float = 0.15,
    density: Range = (0.2, 0.8),
    contrast: float = 0.25,
    noise: Range = (0.01, 0.03),
) -> Iterator[Record]:
    """Yield ``n_patients`` mammograms (``size`` rows and columns of ``spacing`` mm).

    prevalence, findings
        Share of images with findings, and how many such an image has (inclusive).
    calcification_fraction, spiculated_fraction
        Share of findings that are calcification clusters, and of masses that are spiculated.
    malignant_given_suspicious, malignant_given_benign_look
        Probability of malignancy of a spiculated mass or a cluster, and of a circumscribed mass.
    density, contrast, noise
        Range of the fibroglandular density, the findings' added density, the noise level.
    """
    checked_fraction("prevalence", prevalence)
    knobs = {
        "prevalence": float(prevalence),
        "findings": (int(findings[0]), int(findings[1])),
        "calcification_fraction": checked_fraction("calcification_fraction", calcification_fraction),
        "spiculated_fraction": checked_fraction("spiculated_fraction", spiculated_fraction),
        "mass_diameter_mm": tuple(float(d) for d in mass_diameter_mm),
        "cluster_mm": tuple(float(d) for d in cluster_mm),
        "malignant_given_suspicious": checked_fraction("malignant_given_suspicious", malignant_given_suspicious),
        "malignant_given_benign_look": checked_fraction("malignant_given_benign_look", malignant_given_benign_look),
        "density": tuple(float(d) for d in density),
        "contrast": float(contrast),
        "noise": tuple(float(n) for n in noise),
    }
    size, spacing = (int(size[0]), int(size[1])), float(spacing)
    # world x runs from the chest wall, y is centred: pixel centres, first at the origin
    origin = (spacing / 2, -size[0] * spacing / 2 + spacing / 2)
    for index in range(int(n_patients)):
        rng = np.random.default_rng([seed, 13, index])
        image, label, found = _render(size, spacing, rng, knobs)
        subject = f"breast_p{index:04d}"
        boxes = [
            Box(subject, cls, ((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), False, kind) for x0, y0, x1, y1, cls, kind, _ in found
        ]
        yield Record(
            image_id=subject,
            patient_id=subject,
            label=int(any(f[-1] for f in found)),
            image=image,
            spacing=(spacing, spacing),
            mask=label,
            origin=origin,
            source_checksum=array_checksum(image, label),
            boxes=boxes,
        )
