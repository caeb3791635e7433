"""Datasets: embedded real defaults (scikit-learn digits) and on-disk formats (ImageFolder)."""
