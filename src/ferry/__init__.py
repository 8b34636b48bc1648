"""Ferry: take machine-learning models from the lab to production and keep them healthy."""

__version__ = "0.1.0"
