"""Uplink to the collector: the disk-backed queue and the gRPC stream client."""
