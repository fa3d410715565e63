"""Validation statistics of classifiers (DeLong, paired bootstrap, calibration,
cross-validation spread, subgroups) and their figures."""
