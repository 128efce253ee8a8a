"""The container runtime: lifecycle, isolation and process supervision on one node."""
