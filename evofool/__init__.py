"""evofool: evolve images that classifiers label with near certainty."""

__version__ = "0.1.0"
