"""Eval's answer prompts, metrics (CIs, L-Acc, Pass@k), tables and plots."""
