"""Dataset adapters for real data in its published formats (the Decathlon / nnU-Net
layout, one folder per case, folders of NIfTI / MetaImage files, DICOM series).

Each adapter returns ``(records, total, info)``: an iterator of
:class:`casebook.layout.Record`, the number of records when known, and what
dataset.json needs beyond the records (channel and label names), plus the identifying
values seen in the source so that ingest can check its outputs for them.
Subject ids are always replaced by keyed-hash pseudonyms (:mod:`casebook.deid`).
"""
