"""Software stimulator: device physics and the real wire dialects, served on a pty."""
