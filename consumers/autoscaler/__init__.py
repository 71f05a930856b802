"""Autoscaling consumer groups on queue length, and the actuators that set their worker counts."""
