"""Task family "restoration" (issue 15, in progress): denoising of low-dose CT first.

Built so far, as a library: the physical low-dose simulation (:mod:`.dose`), the
restoration networks (:mod:`.networks`: RED-CNN and a residual MONAI U-Net), the
classical baselines (:mod:`.baselines`) and the metrics with paired bootstrap CIs over
patients (:mod:`.metrics`). Not yet a family of the registry: it has no rules file,
schema section or stages, so no case study can name it.
"""
