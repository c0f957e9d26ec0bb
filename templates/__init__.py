"""Jinja2 templates of infc: generated kernels and bundle files (package data)."""
