"""Data only: the SNMP profiles (one TOML file per MIB) that `profile = "<name>"` expands."""
