"""`python -m utils.pipeline`: run the notebooks in order (see runner.py)."""
import sys

from utils.pipeline.runner import main

sys.exit(main())
