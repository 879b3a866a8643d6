"""The `hyperhttp demo` tour and its embedded server."""
