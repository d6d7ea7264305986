"""The five findings, in the order every table, array and submission column uses."""
LABELS = ("MI", "AF", "HYP", "CD", "STTC")
