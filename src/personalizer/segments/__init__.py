"""Segments: declarative definitions (`definitions`) and their batch evaluation (`batch`)."""
