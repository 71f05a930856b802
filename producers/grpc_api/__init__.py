"""The gRPC job API: the ``taskq.v1.Jobs`` service over the same submitter as the HTTP API."""
