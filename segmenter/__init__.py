"""Reference segmenter: a small HTTP service that implements the inference API contract.

It segments CT volumes by intensity thresholds and morphology. It exists for development
and testing of the portal and is not a clinical model.
"""
