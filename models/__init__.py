"""What RobustDx audits: model cards, the [0, 1]-pixel wrapper, safe loading of uploaded
models, architectures, image decoding, phantom datasets and the demo zoo.

This package imports neither ``app`` nor ``workers``.
"""
