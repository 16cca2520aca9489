"""hbscreen: anaemia screening from a photo of the lower eyelid."""

__version__ = "0.1.0"
