"""Physical constants shared by the simulation, the learned stages' data and the writers."""

MU_WATER = 0.02
"""Linear attenuation of water, mm⁻¹, near 70 keV (a dental CBCT's mean energy); the HU scale of DICOM output and
the soft-tissue level of the simulated heads."""
