"""Hardware abstraction layer: the Stimulator interface, serial transport, device dialects."""
