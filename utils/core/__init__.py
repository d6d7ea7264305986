"""Primitives every step may import (and that import no step): labels, metrics, image reading, figures, atomic
writes, the process pool, the settings key, the command-line wrapper, Grad-CAM, the path resolver."""
