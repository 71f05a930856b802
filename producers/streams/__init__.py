"""Stream sources: entries of a Redis stream, read through a consumer group, become jobs once each."""
