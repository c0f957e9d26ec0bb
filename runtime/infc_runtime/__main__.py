"""`python -m infc_runtime serve|measure BUNDLE_DIR`: see `infc_runtime.serve`."""

import sys

from .serve import main

if __name__ == "__main__":
    sys.exit(main())
