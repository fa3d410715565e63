"""casebook: a reproducible pipeline for the case studies of a book on medical imaging AI.

One module per pipeline stage; each is importable and testable without Snakemake.
The Snakemake rules under ``workflow/rules`` call thin scripts under ``scripts/``
that only unpack ``snakemake.input/params/output/log`` and call into this package.
"""

__version__ = "0.1.0"
