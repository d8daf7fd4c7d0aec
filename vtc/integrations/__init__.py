"""Glue between vtc and evaluation harnesses (lmms-eval); imported only by those harnesses."""
