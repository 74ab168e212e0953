"""Rightsizer: which local language model, at which quantization, should I deploy here?"""

__version__ = "0.1.0"
