"""Measures of generated text: diversity, loops, slop (what ``backtrack-sampler score`` reports)."""
