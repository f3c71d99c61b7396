"""Probes of a hostile peer, a hostile job file and a careless user (issue 19)."""
