"""pyro-dps: Bayesian data point selection (Xu et al., NeurIPS 2024) with Pyro models and SG-MCMC."""
__version__ = "0.1.0"
