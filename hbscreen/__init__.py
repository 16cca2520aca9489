"""hbscreen: anaemia screening from a photo of the lower eyelid.

Installed as one package: `hbscreen.bot` (Telegram front end), `hbscreen.inference` (intake,
quality gate, ONNX pipeline, queue, worker; no torch) and `hbscreen.training` (PyTorch).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hbscreen")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
