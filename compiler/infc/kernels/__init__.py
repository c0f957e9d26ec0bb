"""Pre/post-processing kernels: the step catalogue and its Numba code generator."""
