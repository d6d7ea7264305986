"""Step 02: the sheet found and cropped (roi), YOLO and SAM, the preparation cache, the step itself."""
