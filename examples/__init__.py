"""User models for `eom run --model examples.<module>:factory` (run from the repository root)."""
