"""Task family "registration" (issue 18): images of one patient brought into one space.

Pairs are made from the ingested volumes (:mod:`.pairs`): each slice with its copy
deformed by a known field (a random rigid motion plus a smooth diffeomorphic field from
:mod:`.fields`), with an atlas, with another patient, or a cine's end-diastolic frame
with its other frames. MONAI's VoxelMorph, LocalNet and GlobalNet learn to register them
unsupervised (:mod:`.networks`, :mod:`.losses`: LNCC or mutual information, bending
energy or diffusion regularization; :mod:`.train`, on the shared engine), and
SimpleITK's affine then B-spline registration with mutual information is the classical
baseline (:mod:`.baselines`). Every method is scored on the test pairs (:mod:`.metrics`,
:mod:`.evaluate`): Dice and HD95 of the warped labels, the spread of the log Jacobian
determinant, the share of folding pixels, the error of the field against the truth and
the seconds per pair, with bootstrap CIs over patients, and drawn (:mod:`.figures`).
A cine's end-diastolic labels, carried to every frame, give its ejection fraction
(:mod:`.cine`).
"""
