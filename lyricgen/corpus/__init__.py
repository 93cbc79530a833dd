"""Corpus steps: scraping, cleaning, statistics and export of the lyrics corpus."""
