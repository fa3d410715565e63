"""Seeded synthetic frontal chest radiographs ("pneumonia" vs normal).

Every image is drawn from a small parametric anatomy: body outline, two lung fields,
mediastinum and heart shadow (off-centre towards image right, the patient's left),
spine, posterior ribs, clavicles and hilar vessel markings, on a smooth low-frequency
background with noise. The anatomy is drawn once per patient and reused for all of
that patient's images with a small change of pose, exposure and noise, so images of
one patient look alike -- the reason every split in the pipeline is made by patient.

Class 1 ("pneumonia") adds one opacity per image inside a lung field: either a focal
blob or a diffuse, patchy, lobar consolidation. The label is per patient; the side,
type and style of the opacity are per patient too, while its exact place, size and
contrast change from image to image. ``mask`` is the binary opacity mask (all zeros for
class 0); the pipeline uses it to check where saliency maps look.

Coordinates: rendering happens on a normalised grid ``u`` (columns, left to right) and
``v`` (rows, top to bottom), both in [-1, 1], so the anatomy does not depend on ``size``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from casebook.layout import Record
from casebook.synthetic.patients import assign_patient_labels, images_for_patient, synthetic_record

CLASS_NAMES = ["normal", "pneumonia"]

#: Field of view of the synthetic radiograph in millimetres (a typical 35 cm detector).
FIELD_OF_VIEW_MM = 350.0

Range = tuple[float, float]


# --------------------------------------------------------------------------- helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |x|
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft_superellipse(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float, *, p: float = 2.0, edge: float = 0.05
) -> np.ndarray:
    """Soft (sigmoid-edged) superellipse occupancy in [0, 1]; ``edge`` is in normalised units."""
    r = (np.abs((u - cx) / ax) ** p + np.abs((v - cy) / ay) ** p) ** (1.0 / p)
    return _sigmoid((1.0 - r) * min(ax, ay) / edge)


def _segment_distance(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance from every grid point to the segment a-b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(u - ax - t * dx, v - ay - t * dy)


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# --------------------------------------------------------------------------- anatomy


def _draw_anatomy(rng: np.random.Generator, size: int) -> dict:
    """Per-patient anatomy: everything that makes one patient's images look alike."""
    cx = rng.normal(0.0, 0.03)  # thorax midline
    scale = rng.uniform(0.92, 1.03)  # body habitus
    lung_top = rng.normal(-0.62, 0.04)
    lung_bottom = rng.normal(0.52, 0.05)
    lungs = []
    for side in (-1, 1):  # -1: image left (patient's right lung), +1: image right
        # the left lung (image right) is narrower: the heart takes its medial base
        half_w = scale * rng.uniform(0.26, 0.31) * (0.92 if side == 1 else 1.0)
        bottom = lung_bottom + (0.0 if side == -1 else rng.normal(0.04, 0.02))  # right dome higher
        lungs.append(
            {
                "cx": cx + side * scale * rng.uniform(0.38, 0.44),
                "cy": 0.5 * (lung_top + bottom),
                "ax": half_w,
                "ay": 0.5 * (bottom - lung_top),
                "p": rng.uniform(2.0, 2.6),
            }
        )
    n_markings = int(rng.integers(5, 9))
    return {
        "cx": cx,
        "scale": scale,
        "air": rng.uniform(0.03, 0.08),
        "body_level": rng.uniform(0.50, 0.60),
        "body_half_width": scale * rng.uniform(0.82, 0.90),
        "lungs": lungs,
        "lung_dark": rng.uniform(0.33, 0.40),
        "heart": {
            "cx": cx + rng.uniform(0.14, 0.21),
            "cy": lung_bottom - rng.uniform(0.14, 0.20),
            "ax": scale * rng.uniform(0.24, 0.32),
            "ay": rng.uniform(0.20, 0.26),
        },
        "mediastinum_half_width": rng.uniform(0.09, 0.13),
        "bone_level": rng.uniform(0.04, 0.07),
        "rib_first": lung_top - rng.uniform(0.02, 0.08),
        "rib_step": (lung_bottom - lung_top) / rng.uniform(7.0, 8.0),
        "rib_slope": rng.uniform(0.15, 0.30),
        "rib_curvature": rng.uniform(0.7, 1.1),
        "rib_width": rng.uniform(0.025, 0.035),
        "clavicle_y": lung_top - rng.uniform(0.02, 0.08),
        "clavicle_rise": rng.uniform(0.04, 0.12),
        # hilar vessel markings: a fan of faint lines out of each hilum
        "markings": [
            (side, rng.uniform(-0.5, 0.9) * np.pi / 2, rng.uniform(0.15, 0.35)) for side in (-1, 1) for _ in range(n_markings // 2)
        ],
        "marking_level": rng.uniform(0.02, 0.04),
        "background": _smooth_noise((size, size), size / 6.0, rng) * rng.uniform(0.015, 0.035),
        "lesion_side": int(rng.choice([0, 1])),
        "lesion_diffuse": None,  # decided with the label, see _draw_patient
    }


def _lung_fields(u: np.ndarray, v: np.ndarray, anatomy: dict) -> list[np.ndarray]:
    """Soft occupancy of each lung; the apex is narrower than the base, like a real lung."""
    fields = []
    for lung in anatomy["lungs"]:
        # 0 at the apex, 1 at the base: taper the width towards the apex
        t = np.clip((v - (lung["cy"] - lung["ay"])) / (2 * lung["ay"]), 0.0, 1.0)
        width = lung["ax"] * (0.55 + 0.45 * np.sqrt(t))
        r = (np.abs((u - lung["cx"]) / width) ** lung["p"] + np.abs((v - lung["cy"]) / lung["ay"]) ** lung["p"]) ** (1.0 / lung["p"])
        fields.append(_sigmoid((1.0 - r) * lung["ax"] / 0.03))
    return fields


def _bones(u: np.ndarray, v: np.ndarray, anatomy: dict, body: np.ndarray) -> np.ndarray:
    """Spine, posterior ribs and clavicles, as faint bright bands."""
    cx = anatomy["cx"]
    out = 1.2 * np.exp(-(((u - cx) / 0.05) ** 2))  # spine
    for side in (-1, 1):
        lateral = side * (u - cx)  # distance from the midline, positive outwards
        visible = (lateral > 0.04) & (lateral < anatomy["body_half_width"])
        for k in range(9):
            # posterior rib: rises slightly next to the spine, then sweeps down laterally
            centre = anatomy["rib_first"] + k * anatomy["rib_step"] - anatomy["rib_slope"] * lateral + anatomy["rib_curvature"] * lateral**2
            out += visible * np.exp(-(((v - centre) / anatomy["rib_width"]) ** 2))
        clavicle = _segment_distance(
            u,
            v,
            (cx + side * 0.06, anatomy["clavicle_y"]),
            (cx + side * 0.55, anatomy["clavicle_y"] - anatomy["clavicle_rise"]),
        )
        out += 1.5 * np.exp(-((clavicle / 0.035) ** 2))
    return anatomy["bone_level"] * np.minimum(out, 2.0) * body


def _markings(u: np.ndarray, v: np.ndarray, anatomy: dict) -> np.ndarray:
    """Vessel markings fanning out of the hila, fading towards the periphery."""
    out = np.zeros_like(u)
    for side, angle, length in anatomy["markings"]:
        hilum = (anatomy["cx"] + side * 0.17, -0.05)
        tip = (hilum[0] + side * length * np.cos(angle), hilum[1] + length * np.sin(angle))
        d = _segment_distance(u, v, hilum, tip)
        fade = np.exp(-((np.hypot(u - hilum[0], v - hilum[1]) / (1.5 * length)) ** 2))
        out += np.exp(-((d / 0.018) ** 2)) * fade
    return anatomy["marking_level"] * out


# --------------------------------------------------------------------------- lesions


def _behind_heart(anatomy: dict, x: float, y: float) -> bool:
    """Whether a point lies behind the heart shadow, where an opacity would be hidden."""
    h = anatomy["heart"]
    return ((x - h["cx"]) / h["ax"]) ** 2 + ((y - h["cy"]) / h["ay"]) ** 2 < 1.1 or abs(x - anatomy["cx"]) < 0.12


def _focal_opacity(u, v, anatomy: dict, lung: dict, size_range: Range, rng: np.random.Generator) -> np.ndarray:
    """A round, slightly lobulated blob with a soft edge, somewhere in the visible lung."""
    for _ in range(20):  # place it where the heart does not hide it (the mask must be seen)
        rho, theta = np.sqrt(rng.uniform(0.0, 1.0)) * 0.65, rng.uniform(0, 2 * np.pi)
        cx = lung["cx"] + lung["ax"] * rho * np.cos(theta)
        cy = lung["cy"] + lung["ay"] * rho * np.sin(theta)
        if not _behind_heart(anatomy, cx, cy):
            break
    radius = _uniform(rng, size_range)
    angle = np.arctan2(v - cy, u - cx)
    wobble = 1.0 + rng.uniform(0.05, 0.25) * np.cos(rng.integers(2, 5) * angle + rng.uniform(0, 2 * np.pi))
    r = np.hypot(u - cx, v - cy) / (radius * wobble)
    return _sigmoid((1.0 - r) / 0.18)


def _diffuse_opacity(u, v, anatomy: dict, lung: dict, size_range: Range, rng: np.random.Generator) -> np.ndarray:
    """Patchy consolidation filling part of one lobe: thresholded smooth noise in a window.

    Part of it may lie behind the heart; only the visible part is drawn and masked.
    """
    upper = rng.uniform() < 0.35  # lower lobes more often, as in real pneumonia
    cy = lung["cy"] + lung["ay"] * (rng.uniform(-0.55, -0.2) if upper else rng.uniform(0.15, 0.5))
    cx = lung["cx"] + lung["ax"] * rng.uniform(-0.3, 0.3)
    radius = 1.8 * _uniform(rng, size_range)
    window = _sigmoid((1.0 - np.hypot((u - cx) / (radius * 1.2), (v - cy) / radius)) / 0.2)
    size = u.shape[0]
    patches = _sigmoid((_smooth_noise(u.shape, size / 40.0, rng) + 0.4) / 0.35)
    return window * (0.35 + 0.65 * patches)


def _distractor(u, v, anatomy: dict, rng: np.random.Generator) -> np.ndarray:
    """A small benign bright spot (nipple shadow / calcified granuloma) -- in both classes."""
    lung = anatomy["lungs"][int(rng.integers(0, 2))]
    cx = lung["cx"] + lung["ax"] * rng.uniform(-0.5, 0.5)
    cy = lung["cy"] + lung["ay"] * rng.uniform(-0.2, 0.6)
    r = np.hypot(u - cx, v - cy) / rng.uniform(0.025, 0.045)
    return _sigmoid((1.0 - r) / 0.2)


# --------------------------------------------------------------------------- one image


def _pose_grid(size: int, rng: np.random.Generator, pose_jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid in anatomy coordinates after a small per-image shift, rotation and zoom."""
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    v_img, u_img = np.meshgrid(coords, coords, indexing="ij")
    shift_u, shift_v = rng.normal(0.0, 0.03 * pose_jitter, size=2)
    angle = np.deg2rad(rng.normal(0.0, 2.0 * pose_jitter))
    zoom = 1.0 + rng.normal(0.0, 0.025 * pose_jitter)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    du, dv = (u_img - shift_u) / zoom, (v_img - shift_v) / zoom
    return cos_a * du + sin_a * dv, -sin_a * du + cos_a * dv


def _render_image(
    anatomy: dict,
    label: int,
    size: int,
    rng: np.random.Generator,
    knobs: dict,
) -> tuple[np.ndarray, np.ndarray]:
    u, v = _pose_grid(size, rng, knobs["pose_jitter"])
    body = _soft_superellipse(u, v, anatomy["cx"], 0.15, anatomy["body_half_width"], 1.3, p=4.0, edge=0.04)
    lungs = _lung_fields(u, v, anatomy)
    heart_spec = anatomy["heart"]
    heart = _soft_superellipse(u, v, heart_spec["cx"], heart_spec["cy"], heart_spec["ax"], heart_spec["ay"], edge=0.04)
    mediastinum = np.exp(-(((u - anatomy["cx"] - 0.02) / anatomy["mediastinum_half_width"]) ** 4)) * (v < 0.3)
    # soft tissue in front of and behind the lung hides part of it (heart, mediastinum)
    lung_visible = (lungs[0] + lungs[1]) * (1.0 - heart) * (1.0 - mediastinum) * body

    img = anatomy["air"] + (anatomy["body_level"] - anatomy["air"]) * body
    img = img - anatomy["lung_dark"] * lung_visible + 0.05 * heart * body  # blood-filled heart: denser
    img = img + _bones(u, v, anatomy, body) + _markings(u, v, anatomy) * lung_visible

    mask = np.zeros((size, size), dtype=bool)
    if label == 1:
        lung_index = anatomy["lesion_side"] if rng.uniform() < 0.85 else 1 - anatomy["lesion_side"]
        lung = anatomy["lungs"][lung_index]
        make = _diffuse_opacity if anatomy["lesion_diffuse"] else _focal_opacity
        # only aerated lung in view can turn opaque: soft tissue in front hides the rest
        in_view = lungs[lung_index] * (1.0 - heart) * (1.0 - mediastinum) * body
        opacity = make(u, v, anatomy, lung, knobs["lesion_size"], rng) * in_view
        contrast = _uniform(rng, knobs["lesion_contrast"])
        if rng.uniform() < knobs["subtle_fraction"]:
            contrast *= knobs["subtle_scale"]
        # an opacity replaces aerated lung by fluid: it fills in the lung's darkness
        img = img + contrast * anatomy["lung_dark"] * opacity
        mask = opacity >= 0.5
        if not mask.any():  # a lesion clipped by the lung edge: keep its core
            mask = opacity >= 0.5 * opacity.max()
    if rng.uniform() < knobs["distractor_rate"]:
        img = img + rng.uniform(0.04, 0.09) * _distractor(u, v, anatomy, rng) * body

    # exposure: global gain/offset/gamma change per image; background drift is per patient
    img = img + anatomy["background"]
    img = rng.normal(1.0, knobs["exposure_jitter"]) * img + rng.normal(0.0, 0.5 * knobs["exposure_jitter"])
    img = np.clip(img, 0.0, 1.0) ** np.exp(rng.normal(0.0, knobs["exposure_jitter"]))
    noise_std = _uniform(rng, knobs["noise_std"])
    # detector noise is slightly correlated between neighbouring pixels
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.6)
    img = img + noise * (noise_std / (noise.std() + 1e-12))
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask


# --------------------------------------------------------------------------- public


def generate_cxr(
    *,
    n_patients: int,
    images_per_patient: tuple[int, int] = (2, 5),
    size: int = 64,
    prevalence: float = 0.4,
    seed: int = 0,
    lesion_contrast: Range = (1.0, 1.3),
    lesion_size: Range = (0.1, 0.2),
    diffuse_fraction: float = 0.5,
    subtle_fraction: float = 0.12,
    subtle_scale: float = 0.35,
    noise_std: Range = (0.015, 0.035),
    exposure_jitter: float = 0.06,
    pose_jitter: float = 1.0,
    distractor_rate: float = 0.3,
    sites: Sequence[str] = ("A", "B", "C"),
    site_noise_scale: Sequence[float] = (1.0, 1.0, 2.5),
) -> Iterator[Record]:
    """Yield synthetic frontal chest radiographs, one :class:`Record` per image.

    Images are float32 in [0, 1], ``size`` x ``size``, with spacing
    ``(350 / size, 350 / size)`` mm. ``round(prevalence * n_patients)`` patients have
    label 1 ("pneumonia"), shuffled by ``seed``; all images of a patient share the label.
    ``mask`` is the binary opacity mask (all zeros for label 0). Ids look like
    ``cxr_p0007_i02`` (image) and ``cxr_p0007`` (patient). Same arguments give identical
    arrays; patient ``i`` depends only on ``seed``, ``i`` and its label.

    Difficulty knobs (the defaults give a small DenseNet a test AUC of about 0.9-0.98):

    lesion_contrast
        Range of the opacity's strength, as the fraction of the lung's darkness it fills
        in (1 = as bright as the soft tissue around the lung; above 1 a dense consolidation).
    lesion_size
        Range of the focal opacity radius in normalised units (1 = half the image width);
        diffuse opacities cover a window about twice as large.
    diffuse_fraction
        Fraction of class-1 patients whose opacities are diffuse (patchy, lobar) rather
        than focal blobs.
    subtle_fraction, subtle_scale
        Per image, with probability ``subtle_fraction`` the lesion contrast is multiplied
        by ``subtle_scale``: the hard positives that keep the task from being trivial.
    noise_std
        Range of the per-image noise standard deviation (intensity units).
    exposure_jitter
        Per-image standard deviation of gain, offset and log-gamma changes.
    pose_jitter
        Scale of the per-image shift (3 %), rotation (2 deg) and zoom (2.5 %) changes.
    distractor_rate
        Per-image probability, in both classes, of a small benign bright spot.
    sites, site_noise_scale
        Each patient is imaged at one site (uniformly drawn) whose detector noise is
        ``noise_std`` times its scale (by default site C, a portable unit, is 2.5 times
        noisier), and has a sex (F/M, even odds). Both are manifest columns (``site``,
        ``sex``) for subgroup analysis; they are drawn from their own random stream, so
        a patient's anatomy and lesion do not depend on them.
    """
    knobs = {
        "lesion_contrast": lesion_contrast,
        "lesion_size": lesion_size,
        "subtle_fraction": subtle_fraction,
        "subtle_scale": subtle_scale,
        "noise_std": noise_std,
        "exposure_jitter": exposure_jitter,
        "pose_jitter": pose_jitter,
        "distractor_rate": distractor_rate,
    }
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if len(sites) != len(site_noise_scale) or not sites:
        raise ValueError(f"sites and site_noise_scale must have the same non-zero length, got {sites} and {site_noise_scale}")
    labels = assign_patient_labels(n_patients, prevalence, np.random.default_rng([seed, 0]))
    spacing = (FIELD_OF_VIEW_MM / size, FIELD_OF_VIEW_MM / size)
    for index, label in enumerate(labels):
        # one stream per patient: patient i does not change when n_patients does
        rng = np.random.default_rng([seed, 1, index])
        anatomy = _draw_anatomy(rng, size)
        anatomy["lesion_diffuse"] = bool(rng.uniform() < diffuse_fraction)
        patient_id = f"cxr_p{index:04d}"
        attributes, patient_knobs = _site_and_sex(np.random.default_rng([seed, 2, index]), knobs, sites, site_noise_scale)
        for j in range(images_for_patient(images_per_patient, rng)):
            image, mask = _render_image(anatomy, int(label), size, rng, patient_knobs)
            record = synthetic_record(f"{patient_id}_i{j + 1:02d}", patient_id, int(label), image, mask, spacing)
            record.attributes = attributes
            yield record


def _site_and_sex(rng: np.random.Generator, knobs: dict, sites: Sequence[str], noise_scale: Sequence[float]) -> tuple[dict, dict]:
    """A patient's site and sex, and the knobs of its images (the site's detector noise)."""
    k = int(rng.integers(len(sites)))
    sex = "F" if rng.uniform() < 0.5 else "M"
    low, high = knobs["noise_std"]
    return {"site": str(sites[k]), "sex": sex}, {**knobs, "noise_std": (low * noise_scale[k], high * noise_scale[k])}
