"""The robustness perturbations by name: their default severities, the severity that
leaves an image as it is, and the axis label of each (torch-free).

The perturbations themselves (TorchIO) are in :mod:`.perturbations`, which re-exports
these names; the summary figure and planning read them from here, without torch.
"""

from __future__ import annotations

# Chosen on the book's case studies (synthetic data; 64 px CXR DenseNet and ResNet-18,
# 32^3 nodule CT DenseNet): the lowest levels hardly move the AUC; at the highest, noise,
# blur, ghosting and spike take every model's AUC to 0.5-0.7. The others are
# model-specific, which is the point of sweeping them: gamma takes the AUC to 0.63-0.89
# and, the threshold being fixed, balanced accuracy to 0.5-0.65; the bias field and x
# downsampling degrade the CXR models, hardly the CT one (nor does z downsampling);
# motion costs the CT model 0.18 AUC and the CXR models 0.04-0.07.
DEFAULT_SEVERITIES: dict[str, list[float]] = {
    "noise": [0.1, 0.25, 0.5, 1.0, 2.0],
    "blur": [0.5, 1.0, 2.0, 4.0],
    "bias_field": [0.05, 0.1, 0.25, 0.5],
    "motion": [5.0, 10.0, 20.0, 40.0],
    "ghosting": [0.5, 1.0, 2.0, 4.0],
    "spike": [0.25, 0.5, 1.0, 2.0, 4.0],
    "gamma": [0.1, 0.25, 0.5, 1.0],
    "downsampling": [2.0, 4.0, 6.0, 8.0],
}
PERTURBATIONS = tuple(DEFAULT_SEVERITIES)

# the severity that leaves an image as it is: the clean point of every sweep
IDENTITY: dict[str, float] = {name: 1.0 if name == "downsampling" else 0.0 for name in PERTURBATIONS}

# axis labels of the figures
UNITS: dict[str, str] = {
    "noise": "noise sd / image sd",
    "blur": "blur sd (pixels)",
    "bias_field": "largest coefficient",
    "motion": "largest rotation (degrees)",
    "ghosting": "ghost intensity",
    "spike": "spike intensity",
    "gamma": "log gamma",
    "downsampling": "downsampling factor",
}
