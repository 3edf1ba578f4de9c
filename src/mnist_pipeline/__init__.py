"""Reproducible DVC pipeline for the models of the PyTorch tutorial "What is torch.nn really?"."""
