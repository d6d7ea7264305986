"""Step 07: the paper's ablation tables as grids of runs, their results, robustness curves, compare."""
