"""3D segmentation: the plan, preprocessing with its inverse, patch-based training,
sliding-window inference, networks, metrics and figures (the book's segmentation case
studies: brain tumour in MRI, liver and kidney in CT)."""
