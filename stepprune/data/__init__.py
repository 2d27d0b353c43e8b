"""Problems in: built-in sets and files, gold normalisation, grading, prompts, time limits."""
