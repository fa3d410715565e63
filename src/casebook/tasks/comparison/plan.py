"""What a study's settings say, read without torch or matplotlib (Snakemake reads this
while it plans): where an arm's encoder starts, and which probes have a fine-tuned twin."""

from __future__ import annotations

from typing import Any


def starting_point(network: dict[str, Any]) -> tuple[str, str] | None:
    """("init", pretraining job) or ("weights", file) an arm starts from; None: random."""
    if network.get("init"):
        return ("init", str(network["init"]))
    if network.get("weights"):
        return ("weights", str(network["weights"]["path"]))
    return None


def probe_pairs(models: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(probe, fine-tuned) models that start from the same pretrained encoder."""
    start = {m: starting_point(spec["network"]) for m, spec in models.items()}
    probes = [m for m, spec in models.items() if spec["network"].get("probe") and start[m]]
    return [(p, m) for p in probes for m, spec in models.items() if m != p and not spec["network"].get("probe") and start[m] == start[p]]
