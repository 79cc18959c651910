"""Prompt streams and benchmark helpers."""
