"""Image and text towers, each chosen by name from a registry, and the one place that applies L/U/u."""
