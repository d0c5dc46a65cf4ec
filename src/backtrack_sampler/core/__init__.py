"""The backend-free core: the contracts (providers, strategies, vocabulary), sampling settings, and the engine.

Nothing here imports the rest of the package, torch or a model backend; the
engine in ``engine.py`` is the only place that rewinds.
"""
