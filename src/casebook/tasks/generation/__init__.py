"""Task family "generation": class-conditional image synthesis (issue 15, case study
6.6a). A diffusion model (MONAI's DiffusionModelUNet, DDPM training, DDPM and DDIM
sampling) learns the training split's images; its samples are judged by a classifier the
pipeline trains on the same real images (the features of the Fréchet distance and of
precision/recall, and the class check), checked for memorization against the training
images, and used to train the downstream classifier (utility)."""
