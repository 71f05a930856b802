"""Test doubles of the job store, the blob store and the publisher, checked by the contract tests."""
