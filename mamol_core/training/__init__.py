"""Training: the optimisation loop, and fitting a model on a scene."""
