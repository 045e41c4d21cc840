"""enipin: pin pooled Elastic Network Interfaces to Auto Scaling instances."""

__version__ = "0.1.0"
