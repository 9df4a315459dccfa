"""Active Adaptation: a Label Studio ML backend for active learning on image classification."""

__version__ = "0.1.0"
