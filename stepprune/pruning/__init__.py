"""Step selection and [SKIP] compression; the token-level control."""
