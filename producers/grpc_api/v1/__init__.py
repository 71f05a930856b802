"""Version 1 of the gRPC job API: ``jobs.proto`` and the modules generated from it."""
