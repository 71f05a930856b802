"""The autoscaler: queue signals read from the management API and the pure scaling policy."""
