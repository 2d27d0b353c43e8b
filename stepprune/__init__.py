"""stepprune: step-entropy chain-of-thought compression.

Owns only the package version; every concept lives in its own module (see README's file tree).
"""

__version__ = "0.1.0"
