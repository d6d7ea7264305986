"""Steps 03-04: backbones and weights, the picture -> tensor transform, augmentation, fit(), Stage I and II."""
