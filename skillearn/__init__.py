"""skillearn: learning skills as multilevel optimisation, run as Ray Tune sweeps."""

__version__ = "0.1.0"
