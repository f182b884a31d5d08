"""headscope: a mechanistic-interpretability workbench.

The code lives in three top-level folders, importable as ``headscope.probes`` (observe),
``headscope.circuits`` (intervene and discover) and ``headscope.app`` (dashboard and CLI).
"""

__version__ = "0.1.0"
