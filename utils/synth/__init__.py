"""Step 00: the ECG simulator (waveforms, findings, rhythms) and renderer (paper, scans, photos); `python -m utils.synth`."""
