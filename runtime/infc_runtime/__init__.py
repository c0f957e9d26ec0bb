"""infc_runtime: loads an infc bundle, runs its pipeline and serves it over KServe V2.

This package is copied into every bundle. It never imports the compiler (`infc`)
and depends only on onnxruntime, numpy, numba, starlette, uvicorn and
prometheus_client.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
