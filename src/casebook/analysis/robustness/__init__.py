"""Robustness of classifiers to acquisition-like perturbations of the test images.

``perturbations``: TorchIO perturbations at a given severity; ``sweep``: a model's
test metrics over a sweep of severities, the breakdown severities, and the rule's
stage; ``figures``: metric-versus-severity curves and example images.
"""

from casebook.analysis.robustness.perturbations import DEFAULT_SEVERITIES, IDENTITY, PERTURBATIONS, UNITS, perturb

__all__ = ["DEFAULT_SEVERITIES", "IDENTITY", "PERTURBATIONS", "UNITS", "perturb"]
