"""kitap package."""
