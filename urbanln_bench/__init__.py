"""urbanln-bench: a benchmark harness for urban region representation learning from imagery.

Heavy dependencies (torch, open_clip, transformers) are imported lazily by the modules that need
them, so that importing this package and running ``urbanln-bench --help`` stays fast.
"""

__version__ = "0.1.0"
HARNESS_VERSION = __version__
