"""The VM tier: tests run in a modern host under qemu (tests/vm/run)."""
