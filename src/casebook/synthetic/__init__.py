"""Seeded synthetic datasets: the pipeline's embedded default data.

Each generator yields :class:`casebook.layout.Record` objects, deterministic in its
arguments, with a patient structure (several similar images per patient, one label per
patient) and lesion masks. Their difficulty knobs are tuned so that the pipeline's small
DenseNet reaches a test AUC of roughly 0.90-0.98 (see ``benchmarks/tune_synthetic.py``).
"""

from __future__ import annotations

from typing import Callable, Iterator

from casebook.layout import Record
from casebook.synthetic.cxr import CLASS_NAMES as CXR_CLASS_NAMES
from casebook.synthetic.cxr import generate_cxr
from casebook.synthetic.nodule_ct import CLASS_NAMES as NODULE_CT_CLASS_NAMES
from casebook.synthetic.nodule_ct import generate_nodule_ct

#: Generator name -> function; the name is what configs refer to.
GENERATORS: dict[str, Callable[..., Iterator[Record]]] = {
    "cxr": generate_cxr,
    "nodule_ct": generate_nodule_ct,
}

#: Generator name -> class names (index = label).
CLASS_NAMES: dict[str, list[str]] = {
    "cxr": CXR_CLASS_NAMES,
    "nodule_ct": NODULE_CT_CLASS_NAMES,
}

__all__ = [
    "CLASS_NAMES",
    "CXR_CLASS_NAMES",
    "GENERATORS",
    "NODULE_CT_CLASS_NAMES",
    "generate_cxr",
    "generate_nodule_ct",
]
