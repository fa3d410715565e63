"""Task family "restoration": denoising of low-dose CT (issue 15, the first of its case
studies).

CT slices of the ingested volumes are simulated at lower doses the physical way
(:mod:`.dose`: projection, Poisson counts, filtered back projection; :mod:`.simulate`
writes the pairs), a network learns to restore them (:mod:`.networks`: RED-CNN and a
residual MONAI U-Net; :mod:`.train`, on the shared engine), and every method, the
tuned classical baselines (:mod:`.baselines`) included, is scored with PSNR and SSIM
with bootstrap CIs over patients (:mod:`.metrics`, :mod:`.evaluate`, :mod:`.figures`).
"""
