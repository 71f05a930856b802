"""Inbound signature schemes: one verifier and its signing helpers per sender family."""
