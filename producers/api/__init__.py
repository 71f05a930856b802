"""The HTTP job API: submit, inspect, list, cancel and watch jobs."""
