"""genzoo's version, in a leaf module: ``genzoo`` re-exports it, and the core reads it from here
(a run's config.json records it) without importing the package facade."""
__version__ = "0.1.0"
