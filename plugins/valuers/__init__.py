"""valbench built-in plugins (registered through the valbench entry-point group)."""
