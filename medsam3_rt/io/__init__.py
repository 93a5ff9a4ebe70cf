"""Readers and writers for images, volumes and videos, and atomic output files."""
