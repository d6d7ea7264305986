"""Step 06: where the model looks, measured on the photo; galleries; the run report."""
