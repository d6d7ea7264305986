"""Versions of the code that makes data, which a run's settings do not show: a run keeps the ones it was made with."""

# The synthesizer: bumped whenever a change alters its pictures, so datasets and runs made by older code are not
# reused (utils.synth.generate stamps its sets with it; runs record it in versions.json).
SYNTH_VERSION = 7
