"""The guest tests of the VM tier, run inside the guest by tests/vm/guest/vmtest."""
