"""Inference backends behind one Runner interface (see base.Runner)."""
