"""TOML to a resolved config: loading, environment overrides, editing and reload."""
