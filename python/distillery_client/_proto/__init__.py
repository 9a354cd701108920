"""The distill.v1 messages and stubs, generated from proto/ at build time."""
