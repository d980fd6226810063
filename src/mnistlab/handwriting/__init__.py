"""Handwriting: any image as an MNIST-like digit, augmentation, recognition, robustness."""
