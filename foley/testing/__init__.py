"""Builders of random-weight models in the real models' native formats, for tests, the offline demo and the
benchmark. No production module imports this package.

May import: anything in foley.
"""
