"""invspread-edge training: the Invariant and Spreading Instance Feature method (Ye et al., CVPR 2019).

Heavy modules (torch) load inside the functions that need them, so the CLI starts instantly.
"""

__version__ = "0.1.0"
