"""Strategies: when to backtrack, how far, and how to change the logits."""
