"""Task family "comparison" (issue 17): comparative studies of classifiers.

The arms of a study (CNNs, transformers, pretrained or not, fine-tuned or probed) are
trained on the same images, with the same epochs, augmentation and seeds, at every
level of a sweep of the training set (the fraction of its patients with labels, or the
prevalence of the positive class), and compared on the same test patients with
intervals. Book case studies 6.4a, 6.4c, 6.5a and 6.5c."""
