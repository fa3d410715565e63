"""Task family "detection" (issue 16): where the findings are, not only whether they are there.

The data set's boxes (``boxes.tsv`` in the layout, world mm; :mod:`casebook.boxes`)
become voxel targets on each resampled, windowed volume (:mod:`.volumes`). Two
detectors on MONAI's U-Net learn them (:mod:`.networks`, :mod:`.train`): a centre-point
(CenterNet-style) heatmap detector, whose peaks are the findings and whose size channels
give their boxes (:mod:`.heatmap`), and a U-Net segmenting the findings whose connected
components are the candidates. Candidates go back to world mm and are scored on the
test volumes by the LUNA16 protocol (:mod:`.froc`): a hit lies within a finding's
radius, excluded findings are neither hits nor false positives, the FROC curve and its
CPM (mean sensitivity at 1/8 to 8 false positives per scan) with a bootstrap CI over
patients, sensitivity by size, and MONAI's COCO mAP (:mod:`.evaluate`), all drawn
(:mod:`.figures`).
"""
