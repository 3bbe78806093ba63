"""Backbone registry over timm, classifier, ImageNet weight resolution, checkpoint I/O."""
