"""The autoscaler: queue signals from the management API, the pure scaling policy, the loop, and its actuators."""
