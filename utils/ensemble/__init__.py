"""Step 05: the vote with calibration and thresholds, evaluation, the submission, the packaged model and predict,
the real-ECG check."""
