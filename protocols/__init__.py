"""Pure domain: pulse-protocol model, safety tables, validation and compilation. No I/O."""
