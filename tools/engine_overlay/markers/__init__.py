"""Marked blocks: grammar → snapshot → compare → waivers; transplant = 3-way merge + compare."""
