"""Low-dose CT simulated the physical way, from a CT slice in Hounsfield units.

The slice is turned into linear attenuation, projected to a sinogram of line integrals
(scikit-image ``radon``), and each detector reading is drawn as a Poisson count of the
photons that cross the patient (Beer-Lambert: ``I = I0 * dose * exp(-line integral)``).
The noisy line integrals are reconstructed by filtered back projection (``iradon``,
ramp filter). Lower dose means fewer photons and more quantum noise, with the streaks
and the correlated texture of real low-dose FBP, which additive Gaussian noise on the
image has not.

The reference (the "full-dose" target) is the FBP of the noiseless sinogram: it differs
from a simulated low-dose image by the dose noise only, not by the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import iradon, radon

#: linear attenuation of water at about 70 keV (1/mm): 0 HU
MU_WATER_PER_MM = 0.0192


@dataclass(frozen=True)
class Scanner:
    """Acquisition settings: ``n_angles`` projections over 180 degrees and ``photons``,
    the incident photons per detector reading at full dose (I0; about 1e5 to 1e6 for a
    clinical scanner's normal dose)."""

    n_angles: int = 180
    photons: float = 1e5

    def angles(self) -> np.ndarray:
        return np.linspace(0.0, 180.0, self.n_angles, endpoint=False)


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/mm) of HU values; air (-1000 HU) and below attenuate nothing."""
    return np.clip(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / MU_WATER_PER_MM - 1.0)


def line_integrals(hu: np.ndarray, spacing_mm: float, scanner: Scanner) -> np.ndarray:
    """The noiseless sinogram of a square slice: line integrals of the attenuation
    (dimensionless), one column per angle."""
    _check_slice(hu)
    return radon(hu_to_mu(hu), theta=scanner.angles(), circle=False) * float(spacing_mm)


def fbp(sinogram: np.ndarray, size: int, spacing_mm: float, scanner: Scanner) -> np.ndarray:
    """Filtered back projection (ramp filter) of line integrals to a ``size`` x ``size``
    slice in HU."""
    mu = iradon(sinogram / float(spacing_mm), theta=scanner.angles(), output_size=size, filter_name="ramp", circle=False)
    return mu_to_hu(mu)


def noisy_line_integrals(sinogram: np.ndarray, dose: float, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """Line integrals measured with ``dose`` (a fraction of full dose) of the photons:
    Poisson counts, then ``-log(counts / I0)``. A reading with no photon is counted as
    one (its logarithm is undefined; scanners clamp such readings likewise)."""
    if not 0.0 < dose <= 1.0:
        raise ValueError(f"dose must be a fraction of full dose in (0, 1], got {dose}")
    incident = scanner.photons * dose
    counts = np.maximum(rng.poisson(incident * np.exp(-sinogram)), 1)
    return -np.log(counts / incident)


def reference_slice(hu: np.ndarray, spacing_mm: float, scanner: Scanner) -> np.ndarray:
    """The full-dose target: FBP of the noiseless sinogram."""
    return fbp(line_integrals(hu, spacing_mm, scanner), hu.shape[0], spacing_mm, scanner)


def low_dose_slice(hu: np.ndarray, dose: float, spacing_mm: float, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """The slice as a scan at ``dose`` (fraction of full dose) would reconstruct it."""
    sinogram = noisy_line_integrals(line_integrals(hu, spacing_mm, scanner), dose, scanner, rng)
    return fbp(sinogram, hu.shape[0], spacing_mm, scanner)


def _check_slice(hu: np.ndarray) -> None:
    if hu.ndim != 2 or hu.shape[0] != hu.shape[1]:
        raise ValueError(f"a CT slice to project must be square and 2D, got shape {hu.shape}")
    if not np.isfinite(hu).all():
        raise ValueError("a CT slice to project has non-finite values")
