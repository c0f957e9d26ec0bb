"""`python -m infc_runtime serve BUNDLE_DIR` and `python -m infc_runtime measure BUNDLE_DIR`: see `infc_runtime.serve`."""

import sys

from .serve import main

if __name__ == "__main__":
    sys.exit(main())
