"""Relocalization methods: one folder each, behind one Relocalizer interface."""
