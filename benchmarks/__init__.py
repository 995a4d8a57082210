"""Speed benchmarks of the seresnet package (not tests): ``python -m benchmarks`` runs them all."""
