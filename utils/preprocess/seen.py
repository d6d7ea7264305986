"""One picture's findings that several stages read, each found at most once.

A prediction reads a picture through the turn (utils/preprocess/orient.py), step 02's crop (utils/preprocess/cache.py)
and the digitiser (utils/digitise/trace.py). The turn and the crop both read the traces' ink (`ink_mask` at the
working size); the crop's sheet finder and the digitiser's flattening both run the classical sheet finder. A `Seen`
holds the picture and finds each of these the first time a stage asks, so the others read the same result instead of
searching the picture again. It is for one picture as it stands: a stage that reads the picture turned makes its own.
"""
from __future__ import annotations

import numpy as np

from utils.preprocess.ink import ink_mask
from utils.preprocess.roi import classical_detect


class Seen:
    """The picture's ink and classical sheet, each found on first use (see the module)."""

    def __init__(self, img: np.ndarray):
        self.img = img
        self._ink: np.ndarray | None = None
        self._sheet: dict | None = None

    @property
    def ink(self) -> np.ndarray:
        """The traces' ink at the working size (utils.preprocess.ink.ink_mask); read-only: stages share it."""
        if self._ink is None:
            self._ink = ink_mask(self.img)
            self._ink.flags.writeable = False
        return self._ink

    def sheet(self) -> dict:
        """The classical sheet finder's result (utils.preprocess.roi.classical_detect): a fresh copy for each caller,
        which may add to it."""
        if self._sheet is None:
            self._sheet = classical_detect(self.img)
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._sheet.items()}

    def of(self, img: np.ndarray) -> "Seen | None":
        """This object when `img` is its picture (the same array), else None: a turned copy gets nothing shared."""
        return self if img is self.img else None
