"""VirNucPro: viral sequence identification with packed ESM-2 and DNABERT-S inference."""

__version__ = "0.1.0"
