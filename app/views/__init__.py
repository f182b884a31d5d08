"""The dashboard's views, one module each: ``TAB``, ``LABEL``, ``layout()`` and ``register(app, session, runs_root)``."""
