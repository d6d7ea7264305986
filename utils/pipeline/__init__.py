"""The runner (`python -m utils.pipeline`), the budget it states, Kaggle packaging and wheels, the Kaggle rehearsal:
the layer above the steps."""
