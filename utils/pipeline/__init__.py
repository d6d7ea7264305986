"""The runner (`python -m utils.pipeline`), the configuration and its profiles, run folders, Kaggle packaging."""
