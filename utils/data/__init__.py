"""Step 01: sources, image checks, the manifest, folds and the leakage check."""
