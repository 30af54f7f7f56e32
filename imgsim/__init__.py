"""imgsim: find images that look alike - ResNet50 features, exact k-NN, t-SNE maps."""

__version__ = "0.1.0"
