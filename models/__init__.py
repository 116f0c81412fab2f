"""Pyro model declarations for BADS: the paper's model and alternative priors (installed as `pyro_dps.models`)."""
