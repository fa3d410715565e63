"""Explanations of the classifiers: attribution maps (MONAI, Captum), their
faithfulness (deletion / insertion) and localisation (pointing game, energy inside the
lesion), and the model-randomization sanity check.

- :mod:`.methods`: one function per attribution method, one calling convention.
- :mod:`.faithfulness`: deletion / insertion curves, pointing game, energy in mask.
- :mod:`.sanity`: randomized copies of a model and the rank-correlation check.
- :mod:`.figures`: the explain rule's three figures.
"""

from casebook.analysis.explainability.faithfulness import (
    deletion_insertion,
    energy_in_mask,
    pointing_chance,
    pointing_game,
    random_attribution,
    random_reference,
)
from casebook.analysis.explainability.methods import LABELS, METHODS, attribution_mode, explain
from casebook.analysis.explainability.sanity import cascade_blocks, randomized_copy, rank_correlation, sanity_check

__all__ = [
    "LABELS",
    "METHODS",
    "attribution_mode",
    "cascade_blocks",
    "deletion_insertion",
    "energy_in_mask",
    "explain",
    "pointing_chance",
    "pointing_game",
    "random_attribution",
    "random_reference",
    "randomized_copy",
    "rank_correlation",
    "sanity_check",
]
