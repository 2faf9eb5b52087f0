"""Development tools for this checkout (tests, cluster/local.sh, benchmarks): not installed with superfan."""
