"""The digitiser (picture -> twelve leads in mV, WFDB records) and the signal reader (a 1D network on the digitised
leads), the second reader beside the image model."""
